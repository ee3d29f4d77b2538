"""What every search command shares: the runner's settings from a config, and the outcome."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autorobust.config import SearchConfig
from autorobust.experiment import RunResult
from autorobust.search.runner import SearchSettings

__all__ = ["SearchOutcome", "search_settings"]


def search_settings(
    search: SearchConfig, *, study_name: str, directions: tuple[str, ...] = ("maximize",)
) -> SearchSettings:
    """The runner's settings from a config's ``search`` section (``study_name`` is the default)."""
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
