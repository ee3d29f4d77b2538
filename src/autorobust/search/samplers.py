"""Optuna samplers and pruners by name: the strategies a search can use.

A sampler proposes the next trial's parameters; a pruner stops unpromising trials early. Both are
picked by name from the search settings, so a configuration file never names an Optuna class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from autorobust._registry import Registry
from autorobust.config import check_search_setting
from autorobust.errors import ConfigError

__all__ = [
    "FractionGamma",
    "TrialSeededSampler",
    "create_pruner",
    "create_sampler",
    "pruner_names",
    "sampler_names",
    "trial_seed",
]

_SAMPLERS: Registry[Callable[..., optuna.samplers.BaseSampler]] = Registry("sampler")
_PRUNERS: Registry[Callable[..., optuna.pruners.BasePruner]] = Registry("pruner")


@dataclass(frozen=True)
class FractionGamma:
    """TPE's split size as a constant fraction: ``gamma(n) = ceil(fraction * n)``.

    TPE models the ``gamma(n)`` best of ``n`` finished trials as "good" (density l(x)) and the rest
    as "bad" (g(x)). Optuna's default is ``min(ceil(0.1 n), 25)``, which caps the good set at 25
    trials; a constant fraction keeps growing with the study. A dataclass rather than a lambda so
    the sampler stays picklable.

    Args:
        fraction: share of finished trials counted as good, in (0, 1].
    """

    fraction: float

    def __call__(self, n: int) -> int:
        """Number of good trials (int) among ``n`` finished ones."""
        return math.ceil(self.fraction * n)


@_SAMPLERS.register("tpe")
def _tpe(
    *,
    seed: int | None,
    n_startup_trials: int,
    n_ei_candidates: int,
    gamma: float | None,
    multivariate: bool,
) -> optuna.samplers.BaseSampler:
    if gamma is None:
        return optuna.samplers.TPESampler(
            n_startup_trials=n_startup_trials,
            n_ei_candidates=n_ei_candidates,
            multivariate=multivariate,
            seed=seed,
        )
    # Optuna 4.9 deprecated `gamma` (removal planned for 6.0); we still expose it because the
    # good/bad split is a TPE setting papers report, and hide a warning users cannot act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return optuna.samplers.TPESampler(
            n_startup_trials=n_startup_trials,
            n_ei_candidates=n_ei_candidates,
            gamma=FractionGamma(gamma),
            multivariate=multivariate,
            seed=seed,
        )


@_SAMPLERS.register("random")
def _random(*, seed: int | None, **_: object) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


@_SAMPLERS.register("nsga2")
def _nsga2(*, seed: int | None, **_: object) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed)


@_PRUNERS.register("median")
def _median(*, startup_trials: int, warmup_steps: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)


@_PRUNERS.register("none")
def _no_pruner(**_: object) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


def sampler_names() -> list[str]:
    """Names accepted by :func:`create_sampler`, sorted."""
    return _SAMPLERS.names()


def pruner_names() -> list[str]:
    """Names accepted by :func:`create_pruner`, sorted."""
    return _PRUNERS.names()


def create_sampler(
    name: str,
    *,
    seed: int | None = None,
    n_startup_trials: int = 10,
    n_ei_candidates: int = 24,
    gamma: float | None = None,
    multivariate: bool = False,
) -> optuna.samplers.BaseSampler:
    """Build the Optuna sampler called ``name``.

    - ``"tpe"``: Tree-structured Parzen Estimator (Bergstra et al. 2011). The first
      ``n_startup_trials`` trials are drawn at random; afterwards each parameter maximises
      l(x)/g(x) over ``n_ei_candidates`` draws from l. ``gamma=None`` keeps Optuna's split
      ``min(ceil(0.1 n), 25)``; a float f uses ``ceil(f n)`` (:class:`FractionGamma`).
      ``multivariate=True`` models the parameters jointly. Also handles several objectives (MOTPE).
    - ``"random"``: independent uniform draws; the other settings are ignored.
    - ``"nsga2"``: the NSGA-II genetic algorithm (population 50), meant for several objectives;
      Optuna runs it on one objective as a plain genetic algorithm. The TPE settings are ignored.

    Args:
        name: one of :func:`sampler_names`.
        seed: seed of the sampler's own generator; ``None`` draws one from the OS.
        n_startup_trials: random trials before TPE starts modelling (>= 0).
        n_ei_candidates: candidates scored per TPE proposal (>= 1).
        gamma: fraction of trials TPE treats as good, in (0, 1], or ``None``.
        multivariate: multivariate TPE.

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the valid names.
        ConfigError: a numeric setting is out of range.
    """
    factory = _SAMPLERS.get(name)
    # The bounds of the config's search section (SearchConfig), written once there.
    check_search_setting("n_startup_trials", n_startup_trials)
    check_search_setting("n_ei_candidates", n_ei_candidates)
    check_search_setting("gamma", gamma)
    return factory(
        seed=seed,
        n_startup_trials=n_startup_trials,
        n_ei_candidates=n_ei_candidates,
        gamma=gamma,
        multivariate=multivariate,
    )


def create_pruner(
    name: str, *, startup_trials: int = 5, warmup_steps: int = 0
) -> optuna.pruners.BasePruner:
    """Build the Optuna pruner called ``name``: ``"median"`` or ``"none"``.

    ``"median"`` stops a trial whose best intermediate value so far (reported with
    ``trial.report``) is worse than the median of the completed trials' values at the same step.
    It never prunes before ``startup_trials`` trials have completed, nor at a step below
    ``warmup_steps`` (steps are 0-based, so a trial reporting once per epoch runs at least
    ``warmup_steps`` epochs). Pruning only acts on objectives that report; multi-objective studies
    cannot report. ``"none"`` ignores the settings.

    Args:
        name: one of :func:`pruner_names`.
        startup_trials: completed trials before the pruner acts (>= 0).
        warmup_steps: reported steps of a trial before it can be pruned (>= 0).

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the valid names.
        ConfigError: a setting is negative.
    """
    factory = _PRUNERS.get(name)
    check_search_setting("pruner_startup_trials", startup_trials)
    if warmup_steps < 0:
        raise ConfigError(f"pruner_warmup_epochs: expected an integer >= 0, got {warmup_steps}")
    return factory(startup_trials=startup_trials, warmup_steps=warmup_steps)


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s proposal in a study seeded with ``seed`` (a 32-bit int)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler whose proposal for trial k comes from a fresh sampler seeded by (seed, k).

    A sampler seeded once draws the same sequence in every process that uses the seed: workers
    sharing a study and a seed would propose the same start-up trials, and a resumed study would
    replay its first proposals. Seeding by trial number instead gives concurrent workers (which
    always hold different trial numbers) different draws, and makes a single-worker study
    reproducible: trial k sees the same finished trials and the same seed in every identical run,
    resumed or not. The samplers behind it keep no state between trials other than their random
    generator (TPE, random and NSGA-II read everything else from the study), so rebuilding one
    per trial changes nothing else.

    Args:
        build: makes the underlying sampler from a seed.
        seed: the study's seed.
    """

    def __init__(self, build: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._build = build
        self._seed = seed
        self._number = -1
        self._sampler = build(seed)

    def _for(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        if trial.number != self._number:
            self._number = trial.number
            with warnings.catch_warnings():
                # Shown once when the first sampler was built; not again for every trial.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._sampler = self._build(trial_seed(self._seed, trial.number))
        return self._sampler

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()
