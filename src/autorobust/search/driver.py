"""The one path every search kind takes: open or resume the study, run its trials, finish it,
retrain the best.

A search kind (``autorobust search KIND``, registered in :mod:`autorobust.search.kinds`) builds
what is its own (its splits, its :class:`~autorobust.search.space.SearchSpace`, the objective that
trains one trial, and the config that retrains the best trial) and hands them to
:func:`drive_search`::

    splits -> space -> objective -> drive_search(config, space, objective, ...)
        search_settings(config.search, space=space.describe() + extra)    (common)
        run_trials(objective, settings, run_dir, first_params, next_trial)
            run_study (the runner: n_trials finished across workers), or, with a
            next_trial callback, one trial at a time while it asks for another (budgets)
        finish_study -> search.json (plus summary_fields), the best trial
        on_best(study, best): the kind's outputs of the best trial (files, plots)
        retrain_best(best_config(best), splits) in run_dir/best  (unless best_config is None)
        -> SearchOutcome(run_dir, best, retrained)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from autorobust.config import ExperimentConfig
from autorobust.data.splits import Splits
from autorobust.experiment import RunResult, train_run
from autorobust.search.common import SearchOutcome, finish_study, search_settings
from autorobust.search.runner import (
    Direction,
    SearchSettings,
    open_study,
    run_study,
    study_state_counts,
)
from autorobust.search.space import SearchSpace

__all__ = [
    "NextTrial",
    "NextTrialCallback",
    "Objective",
    "drive_search",
    "retrain_best",
    "run_trials",
]

Objective = Callable[[optuna.Trial], float | Sequence[float]]
"""One trial: asks the trial for a point, trains or scores it, returns one value per direction."""


@dataclass(frozen=True)
class NextTrial:
    """What a ``next_trial`` callback answers to run one more trial.

    Attributes:
        first_params: parameters of the trial to run (enqueued unless the study already holds a
            trial with them); None lets the sampler propose it.
    """

    first_params: Mapping[str, Any] | None = None


NextTrialCallback = Callable[[optuna.Study], NextTrial | None]
"""Called before each trial with the study so far: a :class:`NextTrial` runs one more, None stops
(for instance because the next trial would not fit the compute budget)."""


def run_trials(
    objective: Objective,
    settings: SearchSettings,
    run_dir: Path,
    *,
    first_params: Mapping[str, Any] | None = None,
    next_trial: NextTrialCallback | None = None,
) -> optuna.Study:
    """Open or resume the study of ``settings`` and run trials of ``objective``; return it.

    Without ``next_trial`` this is :func:`~autorobust.search.runner.run_study`: trials run until
    the study holds ``settings.n_trials`` finished (COMPLETE or PRUNED) trials, across workers and
    earlier runs. With ``next_trial``, trials run one at a time: before each, the study stops
    when it holds ``settings.n_trials`` finished trials, else ``next_trial(study)`` is asked, and
    None stops it; a round that finishes no trial (it failed, and the runner logged why) stops it
    too, so a broken objective does not spin.

    Args:
        objective: one trial (see :data:`Objective`).
        settings: storage, sampler, budget (``n_trials``) and fault-tolerance settings.
        run_dir: folder of the default SQLite storage.
        first_params: parameters of a trial to run first (enqueued once, when the study opens).
        next_trial: the stop callback, for budgets (see :data:`NextTrialCallback`).
    """
    if next_trial is None:
        return run_study(objective, settings, run_dir, first_params=first_params)
    study = open_study(settings, run_dir, first_params=first_params)
    while True:
        finished = _finished(study)
        if finished >= settings.n_trials:
            break
        plan = next_trial(study)
        if plan is None:
            break
        study = run_study(
            objective,
            dataclasses.replace(settings, n_trials=finished + 1),
            run_dir,
            first_params=plan.first_params,
        )
        if _finished(study) <= finished:
            break
    return study


def _finished(study: optuna.Study) -> int:
    counts = study_state_counts(study)
    return counts["COMPLETE"] + counts["PRUNED"]


def retrain_best(config: ExperimentConfig, splits: Splits) -> RunResult:
    """Train the best trial's ``config`` (its ``run_dir`` is the search's ``best/``) on ``splits``,
    measured on the test split; a rerun of the search retrains it afresh."""
    return train_run(config, splits=splits, overwrite=True)


def drive_search(
    config: ExperimentConfig,
    space: SearchSpace[Any],
    objective: Objective,
    *,
    splits: Splits,
    default_study_name: str,
    best_config: Callable[[dict[str, Any]], ExperimentConfig] | None,
    describe: Mapping[str, Any] | None = None,
    directions: tuple[Direction, ...] = ("maximize",),
    trial_epochs: int | None = None,
    first_params: Mapping[str, Any] | None = None,
    next_trial: NextTrialCallback | None = None,
    summary_fields: Callable[[optuna.Study], Mapping[str, Any]] | None = None,
    on_best: Callable[[optuna.Study, dict[str, Any]], None] | None = None,
) -> SearchOutcome:
    """Run (or resume) the study of ``config`` in ``config.run_dir``, finish it, retrain the best.

    Args:
        config: the experiment; its ``search`` section gives the storage, sampler and budget
            (``search.study_name``, else ``default_study_name``).
        space: the search space; ``space.describe()`` (with ``describe`` merged over it) is
            stored with the study, and a resumed study must match it.
        objective: one trial (see :data:`Objective`).
        splits: the splits the best trial is retrained on.
        default_study_name: the study name when ``search.study_name`` is unset.
        best_config: the best trial's summary -> the config to retrain (its ``run_dir`` is
            ``run_dir/best``); None skips the retraining.
        describe: what else makes trial values comparable (trial epochs, fitness, ...).
        directions: ``"maximize"`` / ``"minimize"`` per objective value.
        trial_epochs: epochs of one trial, which size the pruner's warm-up (None: no count).
        first_params: parameters of a trial to run first (say, the configured design).
        next_trial: the stop callback of :func:`run_trials`, for budgets.
        summary_fields: the finished study -> more fields of ``search.json``.
        on_best: writes the kind's outputs of the best trial (files, plots), whether or not it
            is retrained; called with the study and the best trial's summary.

    Returns:
        The run directory, the best trial's summary (see
        :func:`~autorobust.search.runner.best_trial_summary`) and the retrained run, if any.

    Raises:
        AutorobustError: the study holds no completed trial, or as :func:`run_trials` raises.
    """
    run_dir = Path(config.run_dir)
    settings = search_settings(
        config.search,
        study_name=default_study_name,
        space={**space.describe(), **(describe or {})},
        directions=directions,
        trial_epochs=trial_epochs,
    )
    study = run_trials(
        objective, settings, run_dir, first_params=first_params, next_trial=next_trial
    )
    extra = {} if summary_fields is None else dict(summary_fields(study))
    best = finish_study(study, run_dir, **extra)["best_trial"]
    if on_best is not None:
        on_best(study, best)
    retrained = None if best_config is None else retrain_best(best_config(best), splits)
    return SearchOutcome(run_dir=run_dir, best=best, retrained=retrained)
