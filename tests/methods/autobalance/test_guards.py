"""The bilevel trainer's guards: fixed parameters stay fixed, skipped steps take no step, bad
loss settings are refused at validation, and group attributes on a device reach the upper step."""

from __future__ import annotations

import dataclasses
import json
import logging
import re

import numpy as np
import pytest
import torch

from autorobust.config import load_config
from autorobust.data.shift import noise_transition_matrix
from autorobust.errors import AutorobustError, ConfigError
from autorobust.experiment import build_model, build_splits, train_run
from autorobust.methods.autobalance.search import bilevel_trial_config, run_search
from autorobust.methods.autobalance.split import split_for_bilevel
from autorobust.methods.autobalance.trainer import BilevelTrainer, bilevel_loss
from autorobust.train.trainer import load_checkpoint

CONFIG = "digits-lt20-autobalance"
SHORT = ("train.epochs=2", "bilevel.warmup_epochs=1")


def _config(tmp_path, name: str, *extra: str):
    overrides = [f"run_dir={tmp_path / name}", "device=cpu", "train.progress=false", *extra]
    return load_config(CONFIG, overrides)


def _learned(tmp_path, name: str) -> dict:
    return json.loads((tmp_path / name / "learned_loss.json").read_text())


@pytest.mark.parametrize(
    ("extra", "fixed", "moved"),
    [
        # A CDT start that is not learned (offsets are): the old projection re-centred log Δ,
        # multiplying every Δ by 1/geometric mean (x1.5 .. x11 on long tails).
        (("bilevel.init_cdt_gamma=0.5",), "scale", "offset"),
        # Logit adjustment that is not learned (scales are): the old projection centred ι.
        (
            (
                "bilevel.init=logit_adjustment",
                "bilevel.learn_offset=false",
                "bilevel.learn_scale=true",
            ),
            "offset",
            "scale",
        ),
    ],
)
def test_parameters_that_are_not_learned_never_change(tmp_path, extra, fixed, moved):
    config = _config(tmp_path, "p", *SHORT, *extra)
    run_search(config, retrain=False)
    learned = _learned(tmp_path, "p")
    # The loss starts from the counts of the lower level's part of the pool.
    counts = np.asarray(learned["bilevel_train_class_counts"], dtype=np.float64)
    start = bilevel_loss(config.bilevel, counts.astype(np.int64)).class_parameters()
    assert learned["method"]["upper_steps"] >= 2
    np.testing.assert_array_equal(learned["options"][fixed], start[fixed])
    np.testing.assert_array_equal(learned["options"]["weight"], start["weight"])
    assert np.abs(np.subtract(learned["options"][moved], start[moved])).max() > 1e-4
    if fixed == "scale":  # the CDT start really is not constant, so re-centring would show
        np.testing.assert_allclose(start["scale"], (counts / counts.max()) ** 0.5, rtol=1e-6)


def test_cdt_with_sigmoid_scales_is_refused_at_validation(tmp_path):
    """The head class's CDT scale is 1, which sigmoid cannot reach: this used to fail only when
    the loss was built, after the run directory was written."""
    extra = ["bilevel.scale_parameterisation=sigmoid", "bilevel.init_cdt_gamma=0.3"]
    with pytest.raises(ConfigError, match=r"bilevel: init_cdt_gamma > 0 .* 'sigmoid'"):
        _config(tmp_path, "s", *extra)
    assert not (tmp_path / "s").exists()
    # Either one alone is fine.
    _config(tmp_path, "s", extra[0])
    _config(tmp_path, "s", extra[1])


def test_tuning_eta_scale_needs_the_neumann_series(tmp_path):
    with pytest.raises(ConfigError, match=r"bilevel: tune: eta_scale only acts on the Neumann"):
        _config(tmp_path, "t", "bilevel.tune=[eta_scale]")
    _config(tmp_path, "t", "bilevel.tune=[eta_scale]", "bilevel.hypergradient=neumann")


def test_upper_step_on_negative_curvature_is_skipped_with_its_reason(tmp_path, caplog):
    """Through every weight of the CNN (``hyper_params: all``) the Hessian is indefinite: no
    upper step is taken (Adam's momentum would otherwise still move α), each skip is one line on
    the console with its reason, and a run that skipped more than half of its upper steps fails
    loudly instead of passing for a learned loss; its checkpoint's log says why."""
    config = bilevel_trial_config(
        _config(tmp_path, "all", *SHORT, "bilevel.hyper_params=all", "bilevel.init=ce")
    )
    logger = "autorobust.methods.autobalance.trainer"
    with caplog.at_level(logging.WARNING, logger=logger), pytest.raises(AutorobustError) as info:
        train_run(config)
    lines = [record.getMessage() for record in caplog.records]
    skips = [line for line in lines if " skipped: " in line]
    assert len(skips) >= 2 and all("\n" not in line for line in lines)
    assert all(
        re.fullmatch(
            r"autobalance: upper step at step \d+ \(epoch 1\) skipped: .*H is not "
            r"positive definite.*",
            line,
        )
        for line in skips
    ), skips
    n = len(skips)
    assert f"autobalance: {n} of {n} upper steps skipped, 0 guarded" in lines[-1]
    assert str(info.value) == (
        f"autobalance: {n} of {n} upper steps were skipped (the Hessian of the lower problem is "
        "not positive definite), so the learned loss was hardly trained; set bilevel.damping > 0 "
        "(e.g. 10) or bilevel.hyper_params: head"
    )
    assert not (tmp_path / "all" / "metrics.json").exists()
    checkpoint = load_checkpoint(tmp_path / "all" / "checkpoint.pt")
    hyper_log = checkpoint["extra"]["hyper_log"]
    assert len(hyper_log) == n
    for entry in hyper_log:
        assert "H is not positive definite" in entry["skipped"]
        assert entry["clip_factor"] == 0.0
    assert checkpoint["extra"]["loss"]["raw_offset"].abs().max() == 0.0  # still CE's


class _GroupsOnAnotherDevice(BilevelTrainer):
    """Trainer.fit leaves ``train_groups`` as a tensor on the training device. On CPU that tensor
    is numpy-readable, which hid the bug of reading it with np.asarray (it fails on CUDA); here it
    is put on the meta device, which numpy cannot read either, so the test runs on CPU."""

    def on_fit_start(self) -> None:
        assert isinstance(self.train_groups, torch.Tensor)
        self.train_groups = self.train_groups.to("meta")
        super().on_fit_start()


def test_group_sensitive_groups_reach_the_upper_step_from_a_device_tensor(tmp_path):
    config = _config(tmp_path, "g", *SHORT, "bilevel.group_sensitive=true")
    splits = build_splits(config)
    # A synthetic sensitive attribute: the image's brightness above its class median.
    brightness = splits.train.images.reshape(len(splits.train.labels), -1).mean(1)
    groups = np.zeros(len(brightness), dtype=np.int64)
    for c in np.unique(splits.train.labels):
        members = splits.train.labels == c
        groups[members] = brightness[members] > np.median(brightness[members])
    splits = dataclasses.replace(splits, train=dataclasses.replace(splits.train, groups=groups))
    train_part, val_part = split_for_bilevel(config, splits)
    counts = np.bincount(train_part.labels, minlength=splits.num_classes)
    trainer = _GroupsOnAnotherDevice(
        bilevel=config.bilevel,
        train_data=train_part,
        val_data=val_part,
        model=build_model(config, splits),
        loss=bilevel_loss(config.bilevel, counts, num_attributes=2),
        settings=config.train,
        device=torch.device("cpu"),
        seed=config.seed,
    )
    trainer.fit(train_part, val_part)
    assert trainer.train_groups.device.type == "meta"  # the attribute fit left was not read
    torch.testing.assert_close(trainer.train_group_tensor, torch.as_tensor(train_part.groups))
    assert len(trainer.hyper_log) >= 2 and all(e["skipped"] is None for e in trainer.hyper_log)
    # Each attribute's row of offsets followed its own samples' hypergradient.
    offsets = trainer.loss.raw_offset.detach()
    assert offsets.shape == (2, 10) and float((offsets[0] - offsets[1]).abs().max()) > 1e-4


def test_forward_correction_through_the_head_alone_names_the_damping(tmp_path, caplog):
    """Through the last layer alone the parametric CE is convex, but forward correction (a fixed
    T) makes the lower problem's Hessian indefinite there too: the run fails, and the error asks
    for the damping, not for ``hyper_params: head``, which is already set."""
    transition = noise_transition_matrix("symmetric", 0.4, 10)
    matrix = f"bilevel.transition={json.dumps(transition.tolist())}"
    config = bilevel_trial_config(
        _config(tmp_path, "fc", *SHORT, "bilevel.init=logit_adjustment", matrix)
    )
    assert config.bilevel.hyper_params == "head"
    logger = "autorobust.methods.autobalance.trainer"
    with caplog.at_level(logging.WARNING, logger=logger), pytest.raises(AutorobustError) as info:
        train_run(config)
    skips = [r.getMessage() for r in caplog.records if " skipped: " in r.getMessage()]
    assert skips and all("negative curvature" in line for line in skips)
    assert str(info.value).endswith(
        "hardly trained; set bilevel.damping above the size of the negative curvature the skips "
        "report"
    )
