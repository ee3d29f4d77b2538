"""What the search commands share, on the real trainer.

A retried trial resumes from its dead predecessor's checkpoint, finishing a study removes what
failed trials left, and identical searches propose identical trials.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autorobust.config import ExperimentConfig, load_config
from autorobust.errors import ConfigError
from autorobust.experiment import build_splits, train_run
from autorobust.search.baseline import BaselineLossSpace
from autorobust.search.baseline import run_search as baseline_search
from autorobust.search.common import finish_study, search_settings, trial_dir
from autorobust.search.runner import open_study

# One thread: results are bit-identical only at a fixed thread count (autorobust.train.threads).
TINY = ["train.progress=false", "train.threads=1", "device=cpu"]


def _demo(tmp_path: Path, *overrides: str) -> ExperimentConfig:
    return load_config("demo", [f"run_dir={tmp_path / 'search'}", *TINY, *overrides])


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning")
def test_retried_trial_resumes_from_the_dead_trials_checkpoint(
    tmp_path: Path, stop_after: Callable
) -> None:
    config = _demo(
        tmp_path, "search.n_trials=2", "search.trial_epochs=4", "search.heartbeat_interval=1"
    )
    run_dir = Path(config.run_dir)
    splits = build_splits(config)
    space = BaselineLossSpace()
    # A worker took trial 0 and died after two epochs, in the middle of writing a checkpoint.
    settings = search_settings(config.search, study_name="baseline", space={})
    abandoned = open_study(dataclasses.replace(settings, space=None), run_dir).ask()
    point = space.suggest(abandoned)
    trial_config = space.apply(config, point, epochs=4, progress=False)
    dead = trial_config.model_copy(update={"run_dir": str(trial_dir(run_dir, 0))})
    with pytest.raises(KeyboardInterrupt):
        train_run(dead, splits=splits, callbacks=[stop_after(2)], evaluate_test=False)
    partial = trial_dir(run_dir, 0) / ".checkpoint.pt.k1ll3d.tmp"
    partial.write_bytes(b"PK\x03\x04 half a checkpoint")
    # What the trial gives when nothing interrupts it.
    whole = train_run(
        trial_config.model_copy(update={"run_dir": str(tmp_path / "whole")}),
        splits=splits,
        evaluate_test=False,
    )
    expected = [r["val_balanced_accuracy"] for r in whole.metrics["history"]]

    baseline_search(config, retrain=False, splits=splits)
    study = optuna.load_study(study_name="baseline", storage=f"sqlite:///{run_dir / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    # Trial 0 went stale while this test trained, so the retry may come first or second.
    (retry,) = (t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.params == trials[0].params
    assert retry.user_attrs["resumed_from_trial"] == 0
    assert retry.user_attrs["resumed_from_epoch"] == 2
    assert trials[0].user_attrs["fail_reason"].startswith("worker stopped sending heartbeats")
    # Epochs 0-1 come from the checkpoint, 2-3 were trained by the retry: all as uninterrupted.
    assert [retry.intermediate_values[epoch] for epoch in range(4)] == expected
    assert retry.value == max(expected)
    assert not trial_dir(run_dir, 0).exists()
    assert sorted(p.name for p in trial_dir(run_dir, retry.number).iterdir()) == [
        ".lock", "config.yaml", "data.json", "metrics.json",
    ]  # fmt: skip


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning")
def test_retried_trial_starts_afresh_over_an_unusable_folder(tmp_path: Path) -> None:
    config = _demo(
        tmp_path, "search.n_trials=1", "search.trial_epochs=2", "search.heartbeat_interval=1"
    )
    run_dir = Path(config.run_dir)
    settings = search_settings(config.search, study_name="baseline", space={})
    abandoned = open_study(dataclasses.replace(settings, space=None), run_dir).ask()
    BaselineLossSpace().suggest(abandoned)
    # The dead worker left a checkpoint that cannot be read and the metrics of a finished run.
    folder = trial_dir(run_dir, 0)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (folder / "metrics.json").write_text('{"history": []}')
    baseline_search(config, retrain=False)
    study = optuna.load_study(study_name="baseline", storage=f"sqlite:///{run_dir / 'study.db'}")
    retry = study.trials[1]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["resumed_from_trial"] == 0
    assert "resumed_from_epoch" not in retry.user_attrs  # trained from epoch 0
    assert sorted(retry.intermediate_values) == [0, 1]
    history = json.loads((trial_dir(run_dir, 1) / "metrics.json").read_text())["history"]
    assert [record["epoch"] for record in history] == [0, 1]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning")
def test_finishing_a_study_removes_what_failed_trials_left(tmp_path: Path) -> None:
    config = _demo(tmp_path)
    run_dir = Path(config.run_dir)
    settings = search_settings(config.search, study_name="left", space={})
    study = open_study(settings, run_dir)
    for state in (TrialState.FAIL, TrialState.PRUNED, TrialState.COMPLETE):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        folder = trial_dir(run_dir, trial.number)
        folder.mkdir(parents=True)
        (folder / "checkpoint.pt").write_bytes(b"weights")
        (folder / ".metrics.json.a1b2.tmp").write_text("{")
        (folder / "config.yaml").write_text("seed: 0\n")
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    finish_study(study, run_dir)
    # The failed and the pruned trial's checkpoints and partial writes are gone (no retry will
    # resume them); the rest is left as it was.
    assert sorted(p.name for p in trial_dir(run_dir, 0).iterdir()) == ["config.yaml"]
    assert sorted(p.name for p in trial_dir(run_dir, 1).iterdir()) == ["config.yaml"]
    assert sorted(p.name for p in trial_dir(run_dir, 2).iterdir()) == [
        ".metrics.json.a1b2.tmp", "checkpoint.pt", "config.yaml",
    ]  # fmt: skip


def _proposals(run_dir: Path, study_name: str) -> list[dict]:
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{run_dir / 'study.db'}")
    return [dict(t.params) for t in study.get_trials(deepcopy=False)]


def test_two_identical_baseline_searches_propose_identical_trials(tmp_path: Path) -> None:
    runs = []
    for name in ("first", "second"):
        config = load_config(
            "demo",
            [f"run_dir={tmp_path / name}", *TINY, "search.n_trials=4",
             "search.n_startup_trials=2", "search.trial_epochs=2"],
        )  # fmt: skip
        assert config.search.seed == config.seed == 0  # the sampler's seed is the run's
        baseline_search(config, retrain=False)
        runs.append(_proposals(tmp_path / name, "baseline"))
    assert len(runs[0]) == 4
    assert runs[0] == runs[1]
    assert len({str(params) for params in runs[0]}) == 4


def test_two_identical_reweighter_searches_propose_identical_trials(tmp_path: Path) -> None:
    from autorobust.methods.meta_weight_net.search import run_search as reweighter_search

    runs = []
    for name in ("first", "second"):
        config = load_config(
            "demo-reweight",
            [f"run_dir={tmp_path / name}", *TINY, "search.n_trials=3",
             "search.n_startup_trials=1", "search.trial_epochs=1"],
        )  # fmt: skip
        reweighter_search(config, retrain=False)
        runs.append(_proposals(tmp_path / name, "reweighter"))
    assert len(runs[0]) == 3
    assert runs[0] == runs[1]
    assert len({str(params) for params in runs[0]}) == 3


def test_the_pruner_warm_up_is_a_fraction_of_the_trials_epochs() -> None:
    from autorobust.search.common import pruner_warmup_steps

    search = _demo(Path("unused")).search
    assert search.pruner_warmup_fraction == 0.2 and search.pruner_warmup_epochs is None
    # Rounded up, at least one epoch; 0.2 * 30 is not 7 through floating point.
    assert [pruner_warmup_steps(search, e) for e in (1, 2, 5, 8, 30, 100)] == [1, 1, 1, 2, 6, 20]
    assert pruner_warmup_steps(search, None) == 5  # no epoch count: the former fixed default
    settings = search_settings(search, study_name="s", space={}, trial_epochs=30)
    assert settings.pruner_warmup_steps == 6
    # A fixed count, as configs written before the fraction existed hold it, wins.
    fixed = search.model_copy(update={"pruner_warmup_epochs": 5})
    assert [pruner_warmup_steps(fixed, e) for e in (2, 30, None)] == [5, 5, 5]
    none = search.model_copy(update={"pruner_warmup_fraction": 0.0})
    assert pruner_warmup_steps(none, 30) == 0
    with pytest.raises(ConfigError, match=r"search\.pruner_warmup_fraction: Input should be less"):
        load_config("demo", ["search.pruner_warmup_fraction=1.5"])
