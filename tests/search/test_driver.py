"""The search driver's trial loop with a stop callback, and the registry of search kinds."""

from __future__ import annotations

import optuna
import pytest

from autorobust.errors import UnknownNameError
from autorobust.search.driver import NextTrial, run_trials
from autorobust.search.kinds import SEARCH_KINDS
from autorobust.search.runner import SearchSettings


def quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    return x * x


def test_run_trials_asks_the_callback_before_each_trial(tmp_path):
    settings = SearchSettings(study_name="budget", n_trials=10, seed=0, pruner="none")
    seen = []

    def next_trial(study: optuna.Study) -> NextTrial | None:
        seen.append(len(study.trials))
        if len(study.trials) >= 3:
            return None  # the budget is spent
        return NextTrial(first_params={"x": 0.5} if not study.trials else None)

    study = run_trials(quadratic, settings, tmp_path, next_trial=next_trial)
    assert seen == [0, 1, 2, 3]
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.trials[0].params == {"x": 0.5}
    # n_trials still bounds it: a resumed study with 3 finished trials runs none.
    resumed = run_trials(
        quadratic, SearchSettings(study_name="budget", n_trials=3, seed=0, pruner="none"),
        tmp_path, next_trial=lambda study: pytest.fail("asked although n_trials is reached"),
    )  # fmt: skip
    assert len(resumed.trials) == 3


def test_run_trials_without_a_callback_is_run_study(tmp_path):
    settings = SearchSettings(study_name="plain", n_trials=2, seed=0, pruner="none")
    study = run_trials(quadratic, settings, tmp_path, first_params={"x": 0.25})
    assert len(study.trials) == 2 and study.trials[0].params == {"x": 0.25}


def test_search_kinds_are_registered_and_an_unknown_one_lists_them():
    assert SEARCH_KINDS.names() == ["architecture", "baseline", "loss", "reweighter"]
    assert SEARCH_KINDS.get("loss").module == "autorobust.methods.autobalance.search"
    assert [o.keyword for o in SEARCH_KINDS.get("architecture").options] == ["fitness"]
    with pytest.raises(UnknownNameError, match="unknown search kind 'nope'; valid: architecture"):
        SEARCH_KINDS.get("nope")
