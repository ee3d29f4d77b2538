"""What every search command shares: the runner's settings from a config, and the outcome."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from autorobust._io import write_json
from autorobust.config import ExperimentConfig, SearchConfig
from autorobust.data.splits import Splits
from autorobust.errors import AutorobustError
from autorobust.experiment import RunResult, train_run
from autorobust.search.runner import SearchSettings, best_trial_summary
from autorobust.train.trainer import EpochRecord

__all__ = [
    "SearchOutcome",
    "finish_study",
    "prune_if_hopeless",
    "search_settings",
    "train_trial",
    "trial_dir",
]


def trial_dir(run_dir: Path, number: int) -> Path:
    """The run directory of trial ``number`` of the study in ``run_dir``."""
    return Path(run_dir) / "trials" / f"trial-{number:04d}"


def prune_if_hopeless(trial: optuna.Trial, value: float, step: int) -> None:
    """Report an intermediate ``value`` at ``step``; raise ``TrialPruned`` if the pruner says so."""
    trial.report(value, step)
    if trial.should_prune():
        raise optuna.TrialPruned()


def train_trial(trial: optuna.Trial, config: ExperimentConfig, splits: Splits) -> RunResult:
    """Train one trial's ``config`` (its ``run_dir`` is the trial's directory) on ``splits``.

    The validation balanced accuracy of every epoch goes to the pruner; the test split is not
    evaluated; the checkpoint is deleted afterwards so a study's disk use stays flat.
    """

    def report(record: EpochRecord) -> None:
        prune_if_hopeless(trial, record.val_balanced_accuracy, record.epoch)

    result = train_run(config, callbacks=[report], splits=splits, evaluate_test=False)
    (Path(config.run_dir) / "checkpoint.pt").unlink(missing_ok=True)
    return result


def finish_study(study: optuna.Study, run_dir: Path, **extra: Any) -> dict[str, Any]:
    """Write the study's summary (plus ``extra`` fields) to ``run_dir/search.json``; return it.

    Raises:
        AutorobustError: the study holds no completed trial.
    """
    summary = {**best_trial_summary(study), **extra}
    write_json(Path(run_dir) / "search.json", summary)
    if summary["best_trial"] is None:
        raise AutorobustError(
            f"study {study.study_name!r} has no completed trial ({summary['state_counts']}); "
            "see the warnings above"
        )
    return summary


def search_settings(
    search: SearchConfig,
    *,
    study_name: str,
    space: Mapping[str, Any],
    directions: tuple[str, ...] = ("maximize",),
) -> SearchSettings:
    """The runner's settings from a config's ``search`` section (``study_name`` is the default);
    ``space`` describes the search space, which a resumed study must share."""
    return SearchSettings(
        study_name=search.study_name or study_name,
        storage=search.storage,
        sampler=search.sampler,
        n_trials=search.n_trials,
        timeout=search.timeout,
        seed=None,
        n_startup_trials=search.n_startup_trials,
        n_ei_candidates=search.n_ei_candidates,
        gamma=search.gamma,
        multivariate=search.multivariate,
        pruner=search.pruner,
        directions=directions,
        heartbeat_interval=search.heartbeat_interval,
        max_retry=search.max_retry,
        show_progress_bar=False,
        space=space,
    )


@dataclass(frozen=True)
class SearchOutcome:
    """A finished search: where it lives, its best trial, and the retrained best design.

    Attributes:
        run_dir: the search's run directory (study, trials, best design).
        best: the best trial as summarised by
            :func:`autorobust.search.runner.best_trial_summary` (``params``, ``value``, ...).
        retrained: the best design trained with the full budget and measured on the test split;
            None when retraining was skipped.
    """

    run_dir: Path
    best: dict[str, Any]
    retrained: RunResult | None
