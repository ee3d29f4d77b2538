from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autorobust.config import load_config
from autorobust.errors import AutorobustError
from autorobust.experiment import build_loss, build_model, build_splits, config_fingerprint
from autorobust.testing import TrainingMethodTests
from autorobust.train.trainer import CHECKPOINT_NAME, Trainer, load_checkpoint


class TestErmConformance(TrainingMethodTests):
    """Plain ERM keeps the contract of every training method (with dropout and augmentation)."""

    config_name = "demo"
    overrides = (
        "train.batch_size=128",
        "model.options.width=8",
        "train.augment.crop_padding=1",
        "model.options.dropout=0.2",
    )


@pytest.fixture(scope="module")
def config():
    return load_config(
        "demo",
        [
            "train.epochs=3",
            "train.progress=false",
            "train.batch_size=128",
            "model.options.width=8",
            "device=cpu",
            "train.augment.crop_padding=1",
            "model.options.dropout=0.2",
        ],
    )


@pytest.fixture(scope="module")
def splits(config):
    return build_splits(config)


def _trainer(config, splits, run_dir, callbacks=()):
    return Trainer(
        model=build_model(config, splits),
        loss=build_loss(config, splits),
        settings=config.train,
        device=torch.device("cpu"),
        seed=config.seed,
        run_dir=run_dir,
        callbacks=callbacks,
        fingerprint=config_fingerprint(config),
    )


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_global_rng_is_left_untouched(config, splits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _trainer(config, splits, None).fit(splits.train, splits.meta)
    assert torch.equal(torch.rand(3), expected)


def test_model_is_selected_on_validation(config, splits):
    result = _trainer(config, splits, None).fit(splits.train, splits.meta)
    scores = [r.val_balanced_accuracy for r in result.history]
    assert result.best_epoch == int(np.argmax(scores))
    assert result.best_score == max(scores)


def test_checkpoint_is_replaced_atomically_and_loads_weights_only(config, splits, tmp_path: Path):
    _trainer(config, splits, tmp_path).fit(splits.train, splits.meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temporary left
    checkpoint = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert checkpoint["epoch"] == 3
    assert len(checkpoint["history"]) == 3


def test_corrupt_and_unsafe_checkpoints_are_refused(tmp_path: Path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(AutorobustError, match=r"corrupt\.pt: not an autorobust checkpoint \(not a"):
        load_checkpoint(corrupt)
    truncated = tmp_path / "truncated.pt"
    torch.save({"version": 1, "w": torch.zeros(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(AutorobustError, match=r"truncated\.pt: .* \(corrupt or truncated archive"):
        load_checkpoint(truncated)

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"version": 1, "x": Payload()}, unsafe)
    with pytest.raises(
        AutorobustError, match=r"unsafe\.pt: .* holds Python objects \(print\)"
    ) as info:
        load_checkpoint(unsafe)
    assert "weights_only" not in str(info.value)  # torch's advice to load it unsafely is dropped


def test_divergence_is_reported(config, splits):
    exploding = config.model_copy(update={"train": config.train.model_copy(update={"lr": 1e12})})
    with pytest.raises(AutorobustError, match="training diverged at epoch 0"):
        _trainer(exploding, splits, None).fit(splits.train, splits.meta)


def test_learning_rate_follows_the_schedule_per_step(config, splits):
    import math

    trainer = _trainer(config, splits, None)
    result = trainer.fit(splits.train, splits.meta)
    steps = math.ceil(len(splits.train) / config.train.batch_size)
    total = steps * config.train.epochs
    # after epoch e the optimiser holds the rate of step (e + 1) * steps of the cosine schedule
    expected = [
        config.train.lr * 0.5 * (1 + math.cos(math.pi * (e + 1) * steps / total))
        for e in range(config.train.epochs)
    ]
    assert [r.lr for r in result.history] == pytest.approx(expected, abs=1e-12)
    assert result.history[-1].lr == pytest.approx(0.0, abs=1e-12)
