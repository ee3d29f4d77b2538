"""train.record_dynamics: AUM's margins and the per-sample losses of the training forward pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autorobust.config import load_config
from autorobust.errors import ConfigError, DataError
from autorobust.experiment import build_loss, build_model, build_splits, config_fingerprint
from autorobust.train.dynamics import (
    DYNAMICS_NAME,
    TrainingDynamics,
    label_margins,
    read_dynamics,
    write_dynamics,
)
from autorobust.train.registry import create_trainer
from autorobust.train.trainer import CHECKPOINT_NAME, Trainer, load_checkpoint

OVERRIDES = [
    "train.progress=false",
    "train.batch_size=128",
    "model.options.width=8",
    "device=cpu",
    "train.threads=1",
    "train.augment.crop_padding=1",
    "model.options.dropout=0.2",
]


def _config(epochs: int, record: bool):
    return load_config(
        "demo", [*OVERRIDES, f"train.epochs={epochs}", f"train.record_dynamics={record}"]
    )


@pytest.fixture(scope="module")
def splits():
    return build_splits(_config(1, False))


class _Seen(Trainer):
    """Keeps what every training step's batch_loss saw (the base step, so it records)."""

    def batch_loss(self, logits, y, index):
        self.seen.append((logits.detach().clone(), y.clone(), index.clone()))
        return super().batch_loss(logits, y, index)


def _trainer(config, splits, run_dir=None, cls=Trainer, callbacks=()):
    return cls(
        model=build_model(config, splits),
        loss=build_loss(config, splits),
        settings=config.train,
        device=torch.device("cpu"),
        seed=config.seed,
        run_dir=run_dir,
        callbacks=callbacks,
        fingerprint=config_fingerprint(config),
    )


def test_label_margins_are_own_logit_minus_best_other() -> None:
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.5, -1.0, 3.0], [4.0, 4.0, 0.0]])
    labels = torch.tensor([1, 0, 0])
    assert label_margins(logits, labels).tolist() == [3.0, -2.5, 0.0]


def test_one_epoch_records_the_margins_and_losses_of_its_forward_passes(splits, tmp_path) -> None:
    config = _config(1, True)
    trainer = _trainer(config, splits, tmp_path, cls=_Seen)
    trainer.seen = []
    result = trainer.fit(splits.train, splits.meta)
    n = len(splits.train.labels)
    margins = np.full(n, np.nan)
    losses = np.full(n, np.nan)
    for logits, y, index in trainer.seen:
        z = logits.double().numpy()
        for row, (label, i) in enumerate(zip(y.tolist(), index.tolist(), strict=True)):
            others = np.delete(z[row], label)
            margins[i] = z[row, label] - others.max()
            shifted = z[row] - z[row].max()
            losses[i] = np.log(np.exp(shifted).sum()) - shifted[label]  # cross-entropy
    assert sum(len(index) for _, _, index in trainer.seen) == n  # each sample once
    assert result.dynamics is not None
    assert result.dynamics.margins.shape == (n, 1)
    assert result.dynamics.margins.dtype == np.float32
    np.testing.assert_allclose(result.dynamics.margins[:, 0], margins, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.dynamics.losses[:, 0], losses, rtol=1e-5, atol=1e-5)
    written = read_dynamics(tmp_path / DYNAMICS_NAME, splits.train.labels)
    np.testing.assert_array_equal(written.margins, result.dynamics.margins)
    np.testing.assert_array_equal(written.losses, result.dynamics.losses)
    np.testing.assert_array_equal(written.labels, splits.train.labels)


def test_recording_leaves_weights_and_checkpoint_keys_alone_when_off(splits, tmp_path) -> None:
    off = _trainer(_config(2, False), splits, tmp_path / "off")
    on = _trainer(_config(2, True), splits, tmp_path / "on")
    off.fit(splits.train, splits.meta)
    on.fit(splits.train, splits.meta)
    for key, value in off.model.state_dict().items():
        assert torch.equal(value, on.model.state_dict()[key]), key
    keys = set(load_checkpoint(tmp_path / "off" / CHECKPOINT_NAME))
    assert keys == {
        "version",
        "fingerprint",
        "epoch",
        "model",
        "optimizer",
        "scheduler",
        "best_epoch",
        "best_score",
        "best_model",
        "history",
        "normalization",
        "extra",
    }
    assert set(load_checkpoint(tmp_path / "on" / CHECKPOINT_NAME)) == keys | {"dynamics"}
    assert not (tmp_path / "off" / DYNAMICS_NAME).exists()


def test_resumed_run_records_the_same_dynamics(splits, tmp_path, stop_after) -> None:
    config = _config(3, True)
    full = _trainer(config, splits, tmp_path / "full").fit(splits.train, splits.meta)
    with pytest.raises(KeyboardInterrupt):
        _trainer(config, splits, tmp_path / "cut", callbacks=[stop_after(2)]).fit(
            splits.train, splits.meta
        )
    assert not (tmp_path / "cut" / DYNAMICS_NAME).exists()
    resumed = _trainer(config, splits, tmp_path / "cut").fit(splits.train, splits.meta, resume=True)
    assert full.dynamics is not None and resumed.dynamics is not None
    assert np.isfinite(full.dynamics.margins).all()
    np.testing.assert_array_equal(full.dynamics.margins, resumed.dynamics.margins)
    np.testing.assert_array_equal(full.dynamics.losses, resumed.dynamics.losses)
    a = np.load(tmp_path / "full" / DYNAMICS_NAME)
    b = np.load(tmp_path / "cut" / DYNAMICS_NAME)
    for name in ("margins", "losses", "labels"):
        np.testing.assert_array_equal(a[name], b[name])


def test_a_trainer_that_does_not_record_refuses_it() -> None:
    config = load_config("demo-reweight", [*OVERRIDES[:4], "train.record_dynamics=true"])
    splits = build_splits(config)
    refused = r"^train\.record_dynamics: ReweightingTrainer does not record"
    with pytest.raises(ConfigError, match=refused):
        create_trainer(
            config.method,
            config,
            splits,
            model=build_model(config, splits),
            loss=build_loss(config, splits),
            settings=config.train,
            device=torch.device("cpu"),
            seed=0,
        )


def test_the_reader_refuses_corrupt_and_mismatched_files(tmp_path: Path) -> None:
    labels = np.array([0, 1, 1])
    good = TrainingDynamics(
        margins=np.zeros((3, 2), np.float32), losses=np.ones((3, 2), np.float32), labels=labels
    )
    path = write_dynamics(tmp_path / DYNAMICS_NAME, good)
    assert read_dynamics(path, labels).margins.shape == (3, 2)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=r"corrupt\.npz: corrupt or truncated \.npz") as info:
        read_dynamics(corrupt, labels)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=r"margins must be float \(4, epochs\) for this pool"):
        read_dynamics(path, np.array([0, 1, 1, 0]))
    with pytest.raises(DataError, match="its labels differ from this pool's"):
        read_dynamics(path, np.array([0, 1, 0]))
    with pytest.raises(DataError, match="dynamics file not found"):
        read_dynamics(tmp_path / "absent.npz", labels)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, margins=np.array([object()] * 3, dtype=object), losses=np.ones(3))
    with pytest.raises(DataError, match=r"no 'labels' array \(not a dynamics\.npz\)"):
        read_dynamics(pickled, labels)
    nan = tmp_path / "nan.npz"
    np.savez(nan, margins=np.full((3, 1), np.nan), losses=np.ones((3, 1)), labels=labels)
    with pytest.raises(DataError, match="3 margins are not finite"):
        read_dynamics(nan, labels)
