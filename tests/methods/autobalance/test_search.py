"""``autorobust search loss``: the done-when test on digits, outputs, resume and group mode."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from autorobust.cli import main
from autorobust.config import load_config
from autorobust.data.base import ImageDataset
from autorobust.errors import ConfigError
from autorobust.experiment import build_splits, train_run
from autorobust.losses import create_loss
from autorobust.methods.autobalance.search import (
    BilevelKnobSpace,
    augment_class_strength,
    run_search,
)

CONFIG = "digits-lt20-autobalance"


def _config(tmp_path, name: str, *extra: str):
    overrides = [f"run_dir={tmp_path / name}", "device=cpu", "train.progress=false", *extra]
    return load_config(CONFIG, overrides)


def test_digits_long_tail_offsets_favour_tail_and_beat_ce(tmp_path):
    """Done when: on digits rho = 20 the learned adjustment grows from head to tail classes and the
    retrained model beats CE on balanced test accuracy (same epochs, seed and splits)."""
    config = _config(tmp_path, "ab", "train.epochs=12")
    splits = build_splits(config)
    outcome = run_search(config, splits=splits)
    learned = json.loads((tmp_path / "ab" / "learned_loss.json").read_text())
    offset = np.asarray(learned["options"]["offset"])
    counts = np.asarray(learned["class_counts"])
    assert counts[0] > counts[-1] * 15  # classes 0..9 run from head to tail
    # ι is centred; tail classes get negative offsets (larger margins), head classes positive.
    rank_corr = np.corrcoef(np.argsort(np.argsort(counts)), np.argsort(np.argsort(offset)))[0, 1]
    assert rank_corr > 0.6
    assert offset[-3:].mean() < offset[:3].mean() - 1.0
    ce = train_run(config.model_copy(update={"run_dir": str(tmp_path / "ce")}), splits=splits)
    ab_bacc = outcome.retrained.metrics["test"]["balanced_accuracy"]
    assert ab_bacc > ce.metrics["test"]["balanced_accuracy"] + 0.02
    # the outputs: plot, search summary, retrained run with the learned loss
    assert (tmp_path / "ab" / "learned_loss.png").stat().st_size > 1000
    assert json.loads((tmp_path / "ab" / "search.json").read_text())["best_trial"]["number"] == 0
    best = load_config(str(tmp_path / "ab" / "best" / "config.yaml"))
    assert best.loss.name == "parametric"
    assert learned["method"]["upper_steps"] > 10
    assert learned["method"]["neumann_diverging_steps"] == 0
    # the learned file trains again through the loss registry
    loss = create_loss(
        "parametric", class_counts=counts, params_file=str(tmp_path / "ab" / "learned_loss.json")
    )
    np.testing.assert_allclose(loss.class_parameters()["offset"], offset, rtol=1e-6)


def test_cli_search_loss_resumes_and_tunes(tmp_path, capsys):
    args = [
        "search",
        "loss",
        CONFIG,
        "--run-dir",
        str(tmp_path / "cli"),
        "--no-progress",
        "--device",
        "cpu",
        "--n-trials",
        "2",
        "--no-retrain",
        "--set",
        "train.epochs=3",
        "--set",
        "bilevel.warmup_epochs=1",
        "--set",
        "bilevel.tune=[upper_lr]",
        "--set",
        "search.n_startup_trials=1",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "best trial #" in first and "upper_lr" in first
    summary = json.loads((tmp_path / "cli" / "search.json").read_text())
    assert summary["state_counts"]["COMPLETE"] == 2
    assert main(args) == 0  # the finished study is resumed: no new trial
    summary = json.loads((tmp_path / "cli" / "search.json").read_text())
    assert summary["state_counts"]["COMPLETE"] == 2
    assert len(list((tmp_path / "cli" / "trials").iterdir())) == 2


def test_knob_space_ranges():
    import optuna

    knobs = "bilevel.tune=[upper_lr, warmup_epochs, eta_scale]"
    config = load_config(CONFIG, [knobs, "bilevel.hypergradient=neumann"])
    space = BilevelKnobSpace(config.bilevel)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    point = space.suggest(study.ask())
    assert set(point) == {"upper_lr", "warmup_epochs", "eta_scale"}
    assert 0.005 <= point["upper_lr"] <= 0.3 and 0 <= point["warmup_epochs"] <= 5
    assert space.apply(point).upper_lr == point["upper_lr"]


def test_augment_strength_knob_interpolates_in_log_count():
    import optuna

    config = load_config(
        CONFIG, ["bilevel.tune=[augment_strength]", "bilevel.augment_strength_range=[0.2, 0.9]"]
    )
    point = BilevelKnobSpace(config.bilevel).suggest(optuna.create_study().ask())
    assert set(point) == {"augment_head", "augment_tail"}
    assert all(0.2 <= v <= 0.9 for v in point.values())
    np.testing.assert_allclose(
        augment_class_strength(0.2, 1.0, np.array([100, 10, 1])), [0.2, 0.6, 1.0]
    )
    assert augment_class_strength(0.4, 1.0, np.array([7, 7])) == [0.4, 0.4]


def test_search_loss_tunes_per_class_augmentation(tmp_path):
    """TPE over the head/tail augmentation strength; the best trial's per-class strengths are
    written to learned_loss.json and used by the retraining."""
    extra = ("train.epochs=2", "bilevel.warmup_epochs=1", "bilevel.tune=[augment_strength]")
    config = _config(tmp_path, "aug", *extra, "search.n_trials=2")
    run_search(config)
    learned = json.loads((tmp_path / "aug" / "learned_loss.json").read_text())
    strength = learned["augment_class_strength"]
    assert len(strength) == 10 and all(0.0 <= s <= 1.0 for s in strength)
    retrained = load_config(str(tmp_path / "aug" / "best" / "config.yaml"))
    assert retrained.train.augment.class_strength == strength
    plain = _config(tmp_path, "plain", *extra, "train.augment.crop_padding=0")
    with pytest.raises(ConfigError, match="augment_strength needs an augmentation switched on"):
        run_search(plain)


def _with_groups(splits):
    """Synthetic group attribute: image brightness above the class median (a 'sensitive' bit)."""

    def groups_of(images, labels):
        brightness = images.reshape(len(images), -1).mean(1)
        out = np.zeros(len(labels), dtype=np.int64)
        for c in np.unique(labels):
            members = labels == c
            out[members] = brightness[members] > np.median(brightness[members])
        return out

    train = dataclasses.replace(
        splits.train, groups=groups_of(splits.train.images, splits.train.labels)
    )
    test = ImageDataset(
        splits.test.images, splits.test.labels, groups_of(splits.test.images, splits.test.labels)
    )
    return dataclasses.replace(splits, train=train, test=test)


def test_group_mode_fairness_objective_and_metrics(tmp_path):
    config = _config(
        tmp_path, "fair", "train.epochs=3", "bilevel.warmup_epochs=1", "bilevel.objective=fairness"
    )
    splits = _with_groups(build_splits(config))
    outcome = run_search(config, splits=splits)
    fairness = outcome.retrained.metrics["fairness"]
    assert 0.0 <= fairness["equal_opportunity_gap"] <= 1.0
    assert 0.0 <= fairness["worst_group_accuracy"] <= 1.0
    assert set(fairness["group_accuracy"]) == {"0", "1"}
    on_disk = json.loads((tmp_path / "fair" / "best" / "metrics.json").read_text())
    assert on_disk["fairness"] == fairness


def test_group_sensitive_parameters_per_attribute(tmp_path):
    config = _config(
        tmp_path, "gs", "train.epochs=2", "bilevel.warmup_epochs=1", "bilevel.group_sensitive=true"
    )
    splits = _with_groups(build_splits(config))
    outcome = run_search(config, splits=splits)
    learned = json.loads((tmp_path / "gs" / "learned_loss.json").read_text())
    offsets = np.asarray(learned["options"]["offset"])
    assert offsets.shape == (2, 10)
    # the retraining uses the per-attribute loss: one row of parameters per group attribute
    assert outcome.retrained is not None
    assert outcome.retrained.metrics["run"]["loss"] == "parametric"
    assert {"equal_opportunity_gap", "worst_group_accuracy"} <= set(
        outcome.retrained.metrics["fairness"]
    )


def test_group_sensitive_without_groups_is_a_config_error(tmp_path):
    config = _config(tmp_path, "nogroups", "train.epochs=2", "bilevel.group_sensitive=true")
    with pytest.raises(Exception, match=r"bilevel\.group_sensitive: the data source provides no"):
        run_search(config, retrain=False)


@pytest.mark.parametrize(
    "extra",
    [
        # Through every weight the CNN's Hessian is indefinite: damping makes the steps solvable.
        ("bilevel.hyper_params=all", "bilevel.damping=10"),
        ("bilevel.hypergradient=unrolled",),
        ("bilevel.hypergradient=neumann", "bilevel.learn_scale=true", "bilevel.learn_weight=true"),
    ],
)
def test_hypergradient_variants_run_and_move_the_parameters(tmp_path, extra):
    config = _config(tmp_path, "v", "train.epochs=2", "bilevel.warmup_epochs=1", *extra)
    run_search(config, retrain=False)
    learned = json.loads((tmp_path / "v" / "learned_loss.json").read_text())
    assert learned["method"]["upper_steps"] >= 2 and learned["method"]["skipped_steps"] == 0
    assert np.ptp(learned["options"]["offset"]) > 0.0  # started at CE (all zero)
    assert all(np.isfinite(e["hypergrad_norm"]) for e in learned["hyper_log"])
