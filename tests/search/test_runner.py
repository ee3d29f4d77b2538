"""The Optuna runner on real SQLite studies in tmp_path: budget, failures, resume, Ctrl-C."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import sqlalchemy.exc

from autorobust.errors import AutorobustError, ConfigError, UnknownNameError
from autorobust.search._storage import is_creation_race
from autorobust.search.runner import (
    SearchSettings,
    best_trial_summary,
    create_sampler,
    open_study,
    redact_url,
    run_study,
    study_state_counts,
    take_over_trial_dir,
)
from autorobust.search.samplers import FractionGamma, create_pruner


def quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -3.0, 3.0)
    return -((x - 1.0) ** 2)


def states(study: optuna.Study) -> list[str]:
    return [trial.state.name for trial in study.get_trials(deepcopy=False)]


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("nsga2", optuna.samplers.NSGAIISampler),
    ],
)
def test_create_sampler_by_name(name: str, cls: type) -> None:
    assert type(create_sampler(name, seed=0)) is cls


def test_create_sampler_unknown_name_lists_valid_names() -> None:
    with pytest.raises(
        UnknownNameError, match=r"unknown sampler 'cmaes'; valid: nsga2, random, tpe"
    ):
        create_sampler("cmaes", seed=0)


def test_create_sampler_rejects_bad_gamma() -> None:
    with pytest.raises(ConfigError, match=r"gamma: expected a number in \(0, 1\].*got 1.5"):
        create_sampler("tpe", gamma=1.5)


def test_fraction_gamma_and_pruners() -> None:
    assert [FractionGamma(0.25)(n) for n in (0, 1, 4, 100)] == [0, 1, 1, 25]
    assert isinstance(create_pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(create_pruner("none"), optuna.pruners.NopPruner)
    with pytest.raises(UnknownNameError, match=r"valid: median, none"):
        create_pruner("hyperband")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_trials", 0, r"n_trials: expected an integer >= 1, got 0"),
        ("timeout", -1.0, r"timeout: expected a number > 0 or null, got -1.0"),
        ("directions", ("up",), r"directions: expected .*got \['up'\]"),
        ("grace_period", 60, r"grace_period: expected seconds > heartbeat_interval \(60\)"),
        ("gamma", 0.0, r"gamma: expected a number in \(0, 1\] or null, got 0.0"),
    ],
)
def test_settings_validation_names_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SearchSettings(**{"study_name": "s", "n_trials": 3, field: value})


def test_settings_unknown_sampler() -> None:
    with pytest.raises(UnknownNameError, match=r"sampler: unknown sampler 'grid'"):
        SearchSettings(study_name="s", n_trials=3, sampler="grid")  # type: ignore[arg-type]


def test_tpe_study_reaches_n_trials_complete(tmp_path: Path) -> None:
    settings = SearchSettings(study_name="quad", n_trials=12, seed=0, n_startup_trials=4)
    study = run_study(quadratic, settings, tmp_path)
    assert (tmp_path / "study.db").is_file()
    assert study_state_counts(study) == {
        "RUNNING": 0,
        "COMPLETE": 12,
        "PRUNED": 0,
        "FAIL": 0,
        "WAITING": 0,
    }
    # TPE after 4 random trials should land near the optimum x = 1 of -(x-1)^2 on [-3, 3].
    assert study.best_value > -0.5
    summary = best_trial_summary(study)
    json.dumps(summary, allow_nan=False)
    assert summary["best_trial"]["number"] == study.best_trial.number
    assert summary["best_trial"]["params"] == study.best_trial.params
    assert summary["best_trial"]["value"] == pytest.approx(study.best_value)
    assert summary["state_counts"]["COMPLETE"] == 12
    assert summary["directions"] == ["maximize"]


def test_same_seed_gives_same_trials(tmp_path: Path) -> None:
    params = []
    for name in ("a", "b"):
        settings = SearchSettings(study_name=name, n_trials=6, seed=3, n_startup_trials=3)
        study = run_study(quadratic, settings, tmp_path / name)
        params.append([trial.params["x"] for trial in study.trials])
    assert params[0] == params[1]


def test_failed_trials_are_recorded_and_study_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def flaky(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -3.0, 3.0)
        calls.append(trial.number)
        if len(calls) == 1:
            raise ValueError("boom")
        if len(calls) == 2:
            return math.nan
        return -((x - 1.0) ** 2)

    settings = SearchSettings(study_name="flaky", n_trials=4, sampler="random", seed=0)
    with caplog.at_level(logging.WARNING):
        study = run_study(flaky, settings, tmp_path)
    assert states(study) == ["FAIL", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert study.trials[0].user_attrs["fail_reason"] == "ValueError: boom"
    assert study.trials[1].user_attrs["fail_reason"] == "objective returned nan"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "trial 0 failed: ValueError: boom",
        "trial 1 failed: objective returned nan",
    ]


def test_broken_objective_gives_up_after_consecutive_failures(tmp_path: Path) -> None:
    def broken(trial: optuna.Trial) -> float:
        raise RuntimeError("no data")

    settings = SearchSettings(
        study_name="broken", n_trials=5, sampler="random", max_consecutive_failures=3
    )
    with pytest.raises(AutorobustError, match=r"3 trials in a row failed.*RuntimeError: no data"):
        run_study(broken, settings, tmp_path)
    assert states(open_study(settings, tmp_path)) == ["FAIL"] * 3


def test_resume_reuses_study_and_stops_at_n_trials(tmp_path: Path) -> None:
    first = SearchSettings(study_name="resume", n_trials=3, sampler="random", seed=0)
    study = run_study(quadratic, first, tmp_path)
    assert states(study) == ["COMPLETE"] * 3
    second = SearchSettings(study_name="resume", n_trials=5, sampler="random", seed=0)
    study = run_study(quadratic, second, tmp_path)
    assert states(study) == ["COMPLETE"] * 5
    assert optuna.get_all_study_names(second.storage_url(tmp_path)) == ["resume"]
    # The resumed sampler must not replay the first run's random proposals.
    xs = [trial.params["x"] for trial in study.trials]
    assert not set(xs[3:]) & set(xs[:3])
    # Already finished: a rerun adds nothing.
    assert states(run_study(quadratic, second, tmp_path)) == ["COMPLETE"] * 5


def test_pruned_trials_count_as_finished(tmp_path: Path) -> None:
    def prune_odd(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -3.0, 3.0)
        if trial.number % 2 == 1:
            raise optuna.TrialPruned()
        return x

    settings = SearchSettings(study_name="prune", n_trials=4, sampler="random", seed=0)
    study = run_study(prune_odd, settings, tmp_path)
    assert states(study) == ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED"]


def test_keyboard_interrupt_propagates_and_study_resumes(tmp_path: Path) -> None:
    def interrupt_third(trial: optuna.Trial) -> float:
        value = quadratic(trial)
        if trial.number == 2:
            raise KeyboardInterrupt
        return value

    settings = SearchSettings(study_name="ctrl-c", n_trials=5, sampler="random", seed=0)
    with pytest.raises(KeyboardInterrupt):
        run_study(interrupt_third, settings, tmp_path)
    study = open_study(settings, tmp_path)
    assert states(study) == ["COMPLETE", "COMPLETE", "FAIL"]
    assert study.trials[2].user_attrs["fail_reason"] == "interrupted (KeyboardInterrupt)"

    study = run_study(quadratic, settings, tmp_path)
    assert states(study) == ["COMPLETE", "COMPLETE", "FAIL"] + ["COMPLETE"] * 3


def test_abandoned_running_trial_is_failed_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker killed between creating its trial and starting the objective leaves it RUNNING.
    settings = SearchSettings(
        study_name="dead", n_trials=3, sampler="random", seed=0,
        heartbeat_interval=1, grace_period=2, timeout=60,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="Heartbeat of storage is supposed to be used with"):
        abandoned = open_study(settings, tmp_path).ask()
    x = abandoned.suggest_float("x", -3.0, 3.0)
    with caplog.at_level(logging.INFO, logger="autorobust.search.runner"):
        study = run_study(quadratic, settings, tmp_path)
    trials = study.trials
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    # The retry is the last trial: it waits until the abandoned trial's heartbeat goes stale.
    assert trials[3].system_attrs["failed_trial"] == 0
    assert trials[3].params == {"x": x}
    reason = "worker stopped sending heartbeats (killed?): none for more than 2 s"
    assert trials[0].user_attrs == {"fail_reason": reason}
    assert "fail_reason" not in trials[3].user_attrs
    # While waiting, the worker said for which trial and how much of the grace period was left.
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    waits = [m for m in messages if m.startswith("waiting for")]
    assert len(waits) == 1, messages
    assert re.fullmatch(
        r"waiting for trial 0, running in other workers \(last heartbeat: \d+ s ago\); if a "
        r"worker is dead, its trial is retried once it has sent no heartbeat for 2 s: in [012] s "
        r"at the earliest",
        waits[0],
    )
    assert f"trial 0 failed: {reason}; queued a copy with the same parameters (retry 1 of 3)" in (
        messages
    )


def test_retried_trial_takes_over_the_dead_trials_folder(tmp_path: Path) -> None:
    settings = SearchSettings(
        study_name="folder", n_trials=2, sampler="random", seed=0,
        heartbeat_interval=1, grace_period=2, timeout=60,
    )  # fmt: skip

    def folder(number: int) -> Path:
        return tmp_path / "trials" / f"trial-{number:04d}"

    with pytest.warns(UserWarning, match="Heartbeat of storage is supposed to be used with"):
        abandoned = open_study(settings, tmp_path).ask()
    abandoned.suggest_float("x", -3.0, 3.0)
    folder(0).mkdir(parents=True)
    (folder(0) / "checkpoint.pt").write_text("epoch 2")
    (folder(0) / ".checkpoint.pt.x1y2z3.tmp").write_text("half a checkp")  # a killed write
    seen = {}

    def objective(trial: optuna.Trial) -> float:
        taken = take_over_trial_dir(trial, folder(trial.number), folder)
        seen[trial.number] = (taken, sorted(p.name for p in folder(trial.number).glob("*")))
        return quadratic(trial)

    study = run_study(objective, settings, tmp_path)
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE"]
    # Trial 1 is new; trial 2 repeats trial 0 and continues in its folder, the partial write gone.
    assert seen == {1: (None, []), 2: (0, ["checkpoint.pt"])}
    assert not folder(0).exists()
    assert (folder(2) / "checkpoint.pt").read_text() == "epoch 2"
    assert study.trials[2].user_attrs == {"resumed_from_trial": 0}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning")
def test_workers_sharing_a_seed_propose_different_trials(tmp_path: Path) -> None:
    # Two workers open a fresh study at the same moment with the same seed, as the same command
    # started on two machines does; then the same again in another storage.
    proposals = []
    for name in ("a", "b"):
        settings = SearchSettings(study_name="shared", n_trials=4, sampler="tpe", seed=5)
        first, second = open_study(settings, tmp_path / name), open_study(settings, tmp_path / name)
        xs = []
        for study in (first, second, first, second):
            trial = study.ask()
            xs.append(trial.suggest_float("x", -3.0, 3.0))
            study.tell(trial, -((xs[-1] - 1.0) ** 2))
        proposals.append(xs)
    assert len(set(proposals[0])) == 4  # every worker proposed its own point
    assert proposals[0] == proposals[1]  # and the whole search is reproducible


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_resumed_study_proposes_what_an_uninterrupted_one_does(
    tmp_path: Path, sampler: str
) -> None:
    def xs(study: optuna.Study) -> list[float]:
        return [trial.params["x"] for trial in study.trials]

    settings = {"sampler": sampler, "seed": 11, "n_startup_trials": 3}
    whole = run_study(quadratic, SearchSettings(study_name="s", n_trials=7, **settings), tmp_path)
    part = SearchSettings(study_name="s", n_trials=4, **settings)
    run_study(quadratic, part, tmp_path / "resumed")
    resumed = run_study(
        quadratic, SearchSettings(study_name="s", n_trials=7, **settings), tmp_path / "resumed"
    )
    assert xs(resumed) == xs(whole)
    assert len(set(xs(whole))) == 7


def test_pruner_warmup_and_startup_trials(tmp_path: Path) -> None:
    # Every trial reports 6 steps; a later trial is worse at every step than all earlier ones,
    # so the median pruner stops it as soon as it is allowed to.
    def worse_each_trial(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 1.0)
        for step in range(6):
            trial.report(-trial.number - 0.1 * step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(-trial.number)

    settings = SearchSettings(
        study_name="warm", n_trials=6, sampler="random", seed=0,
        pruner_startup_trials=2, pruner_warmup_steps=3,
    )  # fmt: skip
    study = run_study(worse_each_trial, settings, tmp_path)
    assert states(study) == ["COMPLETE", "COMPLETE"] + ["PRUNED"] * 4
    # Pruned at step 3, the first after the warm-up, never earlier.
    assert [max(t.intermediate_values) for t in study.trials[2:]] == [3, 3, 3, 3]
    pruner = create_pruner("median", startup_trials=2, warmup_steps=3)
    assert (pruner._n_startup_trials, pruner._n_warmup_steps) == (2, 3)
    with pytest.raises(ConfigError, match=r"pruner_warmup_epochs: expected an integer >= 0"):
        create_pruner("median", warmup_steps=-1)


def test_creation_races_are_told_from_other_errors(tmp_path: Path) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE studies (id INTEGER PRIMARY KEY)")
    with pytest.raises(sqlalchemy.exc.OperationalError) as exists, engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE studies (id INTEGER PRIMARY KEY)")
    with pytest.raises(sqlalchemy.exc.IntegrityError) as duplicate, engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO studies VALUES (1), (1)")
    missing = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    with pytest.raises(sqlalchemy.exc.OperationalError) as unreachable, missing.connect():
        pass
    assert is_creation_race(exists.value)
    assert is_creation_race(duplicate.value)
    assert not is_creation_race(unreachable.value)


def test_directions_mismatch_is_a_config_error(tmp_path: Path) -> None:
    run_study(quadratic, SearchSettings(study_name="dir", n_trials=1, sampler="random"), tmp_path)
    other = SearchSettings(study_name="dir", n_trials=1, directions=("minimize",))
    with pytest.raises(
        ConfigError,
        match=r"directions: study 'dir' .* created with \['maximize'\], got \['minimize'\]",
    ):
        open_study(other, tmp_path)


def test_resume_over_another_space_is_a_config_error(tmp_path: Path) -> None:
    space = {"width": [8, 64], "inputs": ["loss"]}
    settings = SearchSettings(study_name="sp", n_trials=1, sampler="random", space=space)
    run_study(quadratic, settings, tmp_path)
    assert open_study(settings, tmp_path).user_attrs["search_space"] == space
    same = SearchSettings(study_name="sp", n_trials=2, sampler="random", space=dict(space))
    assert len(run_study(quadratic, same, tmp_path).trials) == 2  # an unchanged space resumes
    other = SearchSettings(
        study_name="sp", n_trials=2, space={"width": [8, 256], "inputs": ["loss"], "lr": [1, 2]}
    )
    with pytest.raises(
        ConfigError,
        match=r"search space: study 'sp' in sqlite:///.*study.db was created over another space "
        r"\(changed: lr, width\); restore those settings",
    ):
        open_study(other, tmp_path)


def test_multi_objective_summary_is_the_pareto_front(tmp_path: Path) -> None:
    def two(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", 0.0, 1.0)
        return x, 1.0 - x

    settings = SearchSettings(
        study_name="mo", n_trials=6, sampler="nsga2", seed=0, directions=("maximize", "maximize")
    )
    summary = best_trial_summary(run_study(two, settings, tmp_path))
    # Every trial of x -> (x, 1 - x) is Pareto optimal.
    assert len(summary["best_trials"]) == 6
    assert summary["best_trial"] is None
    assert all(len(t["values"]) == 2 and t["value"] is None for t in summary["best_trials"])


def test_wrong_number_of_values_is_a_failed_trial(tmp_path: Path) -> None:
    settings = SearchSettings(
        study_name="mo-wrong",
        n_trials=1,
        directions=("maximize", "minimize"),
        max_consecutive_failures=2,
    )
    with pytest.raises(AutorobustError, match="2 trials in a row failed"):
        run_study(quadratic, settings, tmp_path)
    study = open_study(settings, tmp_path)
    assert study.trials[0].user_attrs["fail_reason"] == (
        "objective returned 1 values for 2 directions"
    )


def test_timeout_stops_a_huge_study(tmp_path: Path) -> None:
    settings = SearchSettings(study_name="t", n_trials=10**6, sampler="random", timeout=1.0)
    start = time.monotonic()
    study = run_study(quadratic, settings, tmp_path)
    elapsed = time.monotonic() - start
    n_complete = study_state_counts(study)["COMPLETE"]
    assert 0 < n_complete < 10**6
    assert elapsed < 10.0


def test_summary_of_empty_study(tmp_path: Path) -> None:
    study = open_study(SearchSettings(study_name="empty", n_trials=1), tmp_path)
    summary = best_trial_summary(study)
    assert summary["best_trial"] is None
    assert summary["best_trials"] == []
    assert sum(summary["state_counts"].values()) == 0


def test_missing_driver_names_the_extra_and_hides_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://user:secret@127.0.0.1:1/db"
    settings = SearchSettings(study_name="pg", n_trials=1, storage=url)
    with pytest.raises(AutorobustError, match=r'pip install "autorobust\[postgres\]"') as info:
        open_study(settings, tmp_path)
    assert "secret" not in str(info.value)
    assert "user:***@127.0.0.1" in str(info.value)


def test_unreachable_database_is_one_line_without_password(tmp_path: Path) -> None:
    # Without the driver the message is the install hint (the test above), not the connection.
    pytest.importorskip("psycopg", reason='needs psycopg: pip install "autorobust[postgres]"')
    url = "postgresql+psycopg://user:secret@127.0.0.1:1/db"
    settings = SearchSettings(study_name="pg", n_trials=1, storage=url)
    with pytest.raises(
        AutorobustError, match=r"cannot open study storage postgresql\+psycopg://user:\*\*\*@"
    ) as info:
        open_study(settings, tmp_path)
    assert "secret" not in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", r"storage: expected an SQLAlchemy URL"),
        ("nosuchdb://host/x", r"storage: unknown database kind 'nosuchdb'"),
    ],
)
def test_malformed_storage_url(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_study(SearchSettings(study_name="x", n_trials=1, storage=url), tmp_path)


def test_redact_url() -> None:
    assert redact_url("postgresql+psycopg://u:p%40ss@h:5/db") == "postgresql+psycopg://u:***@h:5/db"
    assert redact_url("sqlite:///a.db") == "sqlite:///a.db"


def test_settings_from_a_config_take_its_validated_fields_and_share_its_bounds() -> None:
    from autorobust.config import SearchConfig, check_search_setting, load_config

    search = load_config("demo", ["search.gamma=1.0", "search.timeout=30"]).search
    assert search.gamma == 1.0  # one bound, (0, 1], for the config, the runner and the sampler
    settings = SearchSettings.from_config(
        search, study_name="default", space={"a": 1}, pruner_warmup_steps=2
    )
    direct = SearchSettings(
        study_name="default", storage=search.storage, sampler=search.sampler,
        n_trials=search.n_trials, timeout=30.0, seed=search.seed,
        n_startup_trials=search.n_startup_trials, n_ei_candidates=search.n_ei_candidates,
        gamma=1.0, multivariate=search.multivariate, pruner=search.pruner,
        pruner_startup_trials=search.pruner_startup_trials, pruner_warmup_steps=2,
        heartbeat_interval=search.heartbeat_interval, max_retry=search.max_retry, space={"a": 1},
    )  # fmt: skip
    assert settings == direct
    for name in ("n_trials", "timeout", "gamma", "heartbeat_interval", "max_retry"):
        assert SearchConfig.model_fields[name].metadata  # bounded on the config, once
    with pytest.raises(ConfigError, match=r"^heartbeat_interval: expected an integer >= 1, got 0$"):
        check_search_setting("heartbeat_interval", 0)
    with pytest.raises(ConfigError, match=r"^n_trials: expected an integer >= 1, got None$"):
        SearchSettings(study_name="s", n_trials=None)  # type: ignore[arg-type]
