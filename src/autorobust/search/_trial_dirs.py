"""The folders of trials: a retry takes over its dead predecessor's folder and resumes there."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

from autorobust.search._storage import RESUMED_FROM_ATTR

_LOG = logging.getLogger("autorobust.search.runner")

__all__ = [
    "PARTIAL_WRITE_GLOB",
    "remove_partial_writes",
    "retried_trial_numbers",
    "take_over_trial_dir",
]


def retried_trial_numbers(trial: optuna.Trial) -> list[int]:
    """Numbers of the dead trials that ``trial`` re-runs, oldest first; empty if not a retry.

    A retry of a retry lists both: the original trial first, the trial it directly repeats last
    (Optuna's ``retry_history``).
    """
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return list(RetryHeartbeatStaleTrialCallback.retry_history(frozen))


# autorobust._io.atomic_write writes `.NAME.RANDOM.tmp` beside its target and renames it; a
# process killed in between leaves the partial file behind.
PARTIAL_WRITE_GLOB = ".*.tmp"


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete the temporary files of interrupted atomic writes under ``folder``; return them."""
    removed = []
    for path in sorted(Path(folder).rglob(PARTIAL_WRITE_GLOB)):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def take_over_trial_dir(
    trial: optuna.Trial, directory: Path, dir_of: Callable[[int], Path]
) -> int | None:
    """Give a retried trial the folder of the dead trial it repeats, so that it can resume there.

    When ``trial`` re-runs trials whose workers died (see :func:`retried_trial_numbers`) and
    ``directory`` does not exist yet, the newest of their folders ``dir_of(number)`` that exists
    is renamed to ``directory``: the objective then finds the dead trial's checkpoint in its own
    folder. The number taken over is stored in the user attribute ``"resumed_from_trial"``.
    Partial files of writes the dead worker never finished (``.*.tmp``) are deleted from
    ``directory`` either way.

    Args:
        trial: the running trial.
        directory: the folder of ``trial``'s run.
        dir_of: the folder of the trial with a given number.

    Returns:
        The number of the dead trial whose folder was taken over, or None.
    """
    directory = Path(directory)
    taken = None
    if not directory.exists():
        for number in reversed(retried_trial_numbers(trial)):
            source = Path(dir_of(number))
            if not source.is_dir():
                continue
            directory.parent.mkdir(parents=True, exist_ok=True)
            try:
                source.rename(directory)
            except FileNotFoundError:  # gone meanwhile: nothing to resume from
                continue
            taken = number
            break
    if taken is not None:
        trial.set_user_attr(RESUMED_FROM_ATTR, taken)
        _LOG.info("trial %d resumes in the folder of dead trial %d", trial.number, taken)
    if directory.is_dir():
        for path in remove_partial_writes(directory):
            _LOG.info("trial %d: removed a partial write %s", trial.number, path)
    return taken
