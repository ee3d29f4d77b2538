"""What every search command shares: the runner's settings from a config, and the outcome."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autorobust._io import write_json
from autorobust.config import ExperimentConfig, SearchConfig
from autorobust.data.splits import Splits
from autorobust.errors import AutorobustError
from autorobust.experiment import RunResult, config_fingerprint, train_run
from autorobust.search.runner import (
    Direction,
    SearchSettings,
    best_trial_summary,
    remove_partial_writes,
    take_over_trial_dir,
)
from autorobust.train.trainer import CHECKPOINT_NAME, EpochRecord, load_checkpoint

__all__ = [
    "RESUMED_FROM_EPOCH_ATTR",
    "SearchOutcome",
    "finish_study",
    "prune_if_hopeless",
    "pruner_warmup_steps",
    "remove_stale_trial_files",
    "search_settings",
    "train_trial",
    "trial_dir",
]

_LOG = logging.getLogger(__name__)

RESUMED_FROM_EPOCH_ATTR = "resumed_from_epoch"
"""User attribute of a retried trial: the epoch its dead predecessor's checkpoint held."""


def trial_dir(run_dir: Path, number: int) -> Path:
    """The run directory of trial ``number`` of the study in ``run_dir``."""
    return Path(run_dir) / "trials" / _TRIAL_NAME.format(number)


_TRIAL_NAME = "trial-{:04d}"


def prune_if_hopeless(trial: optuna.Trial, value: float, step: int) -> None:
    """Report an intermediate ``value`` at ``step``; raise ``TrialPruned`` if the pruner says so."""
    trial.report(value, step)
    if trial.should_prune():
        raise optuna.TrialPruned()


def train_trial(trial: optuna.Trial, config: ExperimentConfig, splits: Splits) -> RunResult:
    """Train one trial's ``config`` (its ``run_dir`` is the trial's directory) on ``splits``.

    The validation balanced accuracy of every epoch goes to the pruner; the test split is not
    evaluated; the checkpoint is deleted afterwards so a study's disk use stays flat.

    A retry of a trial whose worker died resumes it: it takes over the dead trial's directory
    (:func:`~autorobust.search.runner.take_over_trial_dir`, which also deletes partial writes),
    reports the epochs its checkpoint holds to the pruner again, records the epoch it resumes at
    in the user attribute ``"resumed_from_epoch"``, and trains only the remaining epochs. A
    checkpoint of another configuration, or one that cannot be read, is deleted and the trial
    starts afresh.
    """
    directory = Path(config.run_dir)
    taken = take_over_trial_dir(
        trial, directory, lambda number: directory.with_name(_TRIAL_NAME.format(number))
    )
    resume = taken is not None and _report_checkpoint(trial, config)

    def report(record: EpochRecord) -> None:
        prune_if_hopeless(trial, record.val_balanced_accuracy, record.epoch)

    result = train_run(
        config,
        resume=resume,
        # A dead trial may have left metrics but no usable checkpoint: start afresh over them.
        overwrite=taken is not None and not resume,
        callbacks=[report],
        splits=splits,
        evaluate_test=False,
    )
    (directory / CHECKPOINT_NAME).unlink(missing_ok=True)
    return result


def _report_checkpoint(trial: optuna.Trial, config: ExperimentConfig) -> bool:
    """Report the epochs in the trial directory's checkpoint; False (and deleted) if unusable."""
    path = Path(config.run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        return False
    try:
        checkpoint = load_checkpoint(path)
    except AutorobustError as error:
        _LOG.warning("trial %d starts afresh: %s", trial.number, error)
        path.unlink(missing_ok=True)
        return False
    if checkpoint.get("fingerprint") != config_fingerprint(config):
        _LOG.warning(
            "trial %d starts afresh: %s was written by another configuration", trial.number, path
        )
        path.unlink(missing_ok=True)
        return False
    for record in checkpoint["history"]:
        trial.report(record["val_balanced_accuracy"], record["epoch"])
    trial.set_user_attr(RESUMED_FROM_EPOCH_ATTR, int(checkpoint["epoch"]))
    _LOG.info("trial %d resumes at epoch %d", trial.number, checkpoint["epoch"])
    return True


def remove_stale_trial_files(study: optuna.Study, run_dir: Path) -> list[Path]:
    """Delete the checkpoints and partial writes left in the directories of failed and pruned
    trials.

    A failed trial (its worker died, or it raised, or was interrupted) keeps its last checkpoint
    so that a retry can resume from it; once the study is finished no retry will, and the files
    only take disk space. A pruned trial stops inside its training run, so it keeps its checkpoint
    too, though nothing ever resumes it. Returns the files deleted.
    """
    removed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL, TrialState.PRUNED)):
        directory = trial_dir(run_dir, trial.number)
        if not directory.is_dir():
            continue
        removed += remove_partial_writes(directory)
        checkpoint = directory / CHECKPOINT_NAME
        if checkpoint.is_file():
            checkpoint.unlink(missing_ok=True)
            removed.append(checkpoint)
    return removed


def finish_study(study: optuna.Study, run_dir: Path, **extra: Any) -> dict[str, Any]:
    """Write the study's summary (plus ``extra`` fields) to ``run_dir/search.json``; return it.

    Raises:
        AutorobustError: the study holds no completed trial.
    """
    summary = {**best_trial_summary(study), **extra}
    remove_stale_trial_files(study, Path(run_dir))
    write_json(Path(run_dir) / "search.json", summary)
    if summary["best_trial"] is None:
        raise AutorobustError(
            f"study {study.study_name!r} has no completed trial ({summary['state_counts']}); "
            "see the warnings above"
        )
    return summary


FALLBACK_WARMUP_STEPS = 5
"""Steps never pruned in a search whose trials report no epoch count (the former default)."""


def pruner_warmup_steps(search: SearchConfig, trial_epochs: int | None) -> int:
    """Reported steps (epochs) of a trial the pruner never stops: ``search.pruner_warmup_epochs``
    when set, else ``search.pruner_warmup_fraction`` of ``trial_epochs`` rounded up, else (no
    epoch count) :data:`FALLBACK_WARMUP_STEPS`."""
    if search.pruner_warmup_epochs is not None:
        return search.pruner_warmup_epochs
    if trial_epochs is None:
        return FALLBACK_WARMUP_STEPS
    # round() first: 0.2 * 30 is 6.000000000000001 in floating point, which is 6 epochs.
    return math.ceil(round(search.pruner_warmup_fraction * trial_epochs, 9))


def search_settings(
    search: SearchConfig,
    *,
    study_name: str,
    space: Mapping[str, Any],
    directions: tuple[Direction, ...] = ("maximize",),
    trial_epochs: int | None = None,
) -> SearchSettings:
    """The runner's settings from a config's ``search`` section (``study_name`` is the default);
    ``space`` describes the search space, which a resumed study must share; ``trial_epochs``,
    the epochs of one trial, sizes the pruner's warm-up (:func:`pruner_warmup_steps`)."""
    # Validated once, by pydantic: the section's fields are taken as they are.
    return SearchSettings.from_config(
        search,
        study_name=study_name,
        space=space,
        directions=directions,
        pruner_warmup_steps=pruner_warmup_steps(search, trial_epochs),
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
