"""Training on a relabelled pool: the counts a loss uses, weighted loss, determinism, hash."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from autorobust.config import load_config
from autorobust.data.relabel import write_relabel_file
from autorobust.errors import AutorobustError, ConfigError
from autorobust.experiment import (
    build_loss,
    build_model,
    build_splits,
    config_fingerprint,
    train_run,
)
from autorobust.losses import create_loss
from autorobust.train.trainer import CHECKPOINT_NAME, Trainer, load_checkpoint

OVERRIDES = [
    "train.epochs=2",
    "train.progress=false",
    "train.batch_size=128",
    "model.options.width=8",
    "device=cpu",
    "train.threads=1",
    "loss.name=logit_adjustment",
]


@pytest.fixture(scope="module")
def noisy_pool():
    return build_splits(load_config("demo", OVERRIDES)).train


def _relabel(pool, path: Path, weights: bool = False) -> Path:
    """A file that drops every noisy label but the first 5, and relabels those 5 correctly."""
    labels = np.where(pool.noise_mask, -1, pool.labels)
    noisy = np.flatnonzero(pool.noise_mask)[:5]
    labels[noisy] = pool.clean_labels[noisy]
    w = np.linspace(0.3, 1.0, len(labels)) if weights else None
    write_relabel_file(path, labels=labels, source_index=pool.source_index, weights=w)
    return path


def _config(tmp_path: Path, relabel: Path | None, run: str = "run", extra: tuple = ()):
    overrides = [*OVERRIDES, f"run_dir={tmp_path / run}", *extra]
    if relabel is not None:
        overrides.append(f"data.relabel_file={relabel}")
    return load_config("demo", overrides)


def test_prior_based_losses_use_the_counts_of_the_kept_labels(noisy_pool, tmp_path) -> None:
    config = _config(tmp_path, _relabel(noisy_pool, tmp_path / "r.npz"))
    splits = build_splits(config)
    kept = ~noisy_pool.noise_mask
    kept[np.flatnonzero(noisy_pool.noise_mask)[:5]] = True
    expected = np.bincount(noisy_pool.clean_labels[kept], minlength=10)
    np.testing.assert_array_equal(splits.train_class_counts, expected)
    assert not np.array_equal(expected, np.bincount(noisy_pool.labels, minlength=10))
    assert splits.train.realised_noise_rate == 0.0  # every kept label is right
    loss = build_loss(config, splits)
    np.testing.assert_allclose(loss.log_prior.numpy(), np.log(expected / expected.sum()), rtol=1e-6)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / CHECKPOINT_NAME)["model"]


@pytest.mark.parametrize("weighted", [False, True])
def test_training_on_a_relabelled_pool_is_deterministic(noisy_pool, tmp_path, weighted) -> None:
    relabel = _relabel(noisy_pool, tmp_path / "r.npz", weighted)
    first = train_run(_config(tmp_path, relabel, "a"))
    second = train_run(_config(tmp_path, relabel, "b"))
    assert first.metrics["data"]["relabel"]["weighted"] is weighted
    assert first.metrics["data"]["train_size"] == int((~noisy_pool.noise_mask).sum()) + 5
    a, b = _weights(first.run_dir), _weights(second.run_dir)
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_weights_change_training(noisy_pool, tmp_path) -> None:
    plain = train_run(_config(tmp_path, _relabel(noisy_pool, tmp_path / "p.npz"), "p"))
    weighted = train_run(_config(tmp_path, _relabel(noisy_pool, tmp_path / "w.npz", True), "w"))
    a, b = _weights(plain.run_dir), _weights(weighted.run_dir)
    assert not all(torch.equal(a[name], b[name]) for name in a)


def test_fingerprint_follows_the_files_content(noisy_pool, tmp_path) -> None:
    path = _relabel(noisy_pool, tmp_path / "r.npz")
    config = _config(tmp_path, path)
    before = config_fingerprint(config)
    # The same content elsewhere: the same fingerprint (the path does not enter it).
    moved = _relabel(noisy_pool, tmp_path / "moved.npz")
    assert config_fingerprint(_config(tmp_path, moved)) == before
    assert config_fingerprint(_config(tmp_path, None)) != before
    train_run(config)
    _relabel(noisy_pool, path, weights=True)  # the file changes under the finished run
    assert config_fingerprint(config) != before
    with pytest.raises(AutorobustError, match="written by a different configuration"):
        train_run(config, resume=True)


def test_without_a_file_the_fingerprint_is_unchanged(tmp_path) -> None:
    import hashlib
    import json

    config = _config(tmp_path, None)
    relevant = config.to_dict()
    for key in ("run_dir", "device", "search", "design"):  # design: how runs are composed
        relevant.pop(key)
    relevant["train"].pop("progress")
    relevant["train"].pop("threads")
    relevant["train"].pop("record_dynamics")  # off: as before the field existed
    relevant["data"].pop("relabel_file")  # the key did not exist before; checkpoints still resume
    relevant.pop("pseudo_label")  # nor this section, which only method pseudo_label reads
    expected = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]
    assert config_fingerprint(config) == expected


def test_a_method_that_ignores_weights_is_refused_before_anything_is_written(
    noisy_pool, tmp_path
) -> None:
    relabel = _relabel(noisy_pool, tmp_path / "w.npz", weights=True)
    config = _config(tmp_path, relabel, "mwnet", ("method=reweight",))
    with pytest.raises(ConfigError, match="method 'reweight' does not apply"):
        train_run(config)
    assert not (tmp_path / "mwnet").exists()
    # Without weights, any method trains on the relabelled pool.
    plain = _relabel(noisy_pool, tmp_path / "p.npz")
    assert Trainer.applies_sample_weights()
    # (No plots: MW-Net's clean-vs-noisy histogram warns when no label is noisy.)
    extra = ("method=reweight", "train.epochs=1", "reweight.plots=false")
    result = train_run(_config(tmp_path, plain, "mwnet", extra))
    assert result.metrics["data"]["relabel"]["weighted"] is False


def test_weighted_batch_loss_is_the_weighted_mean(noisy_pool, tmp_path) -> None:
    config = _config(tmp_path, None, extra=("loss.name=cross_entropy",))
    splits = build_splits(config)
    trainer = Trainer(
        model=build_model(config, splits),
        loss=create_loss("cross_entropy", class_counts=splits.train_class_counts),
        settings=config.train,
        device=torch.device("cpu"),
        seed=0,
    )
    trainer.train_groups = None
    # Cross-entropies log 2 (logits 0, 0) and log 4 (logits log 3, 0 with label 1).
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]])
    y = torch.tensor([0, 1, 0])
    trainer.train_weights = torch.tensor([9.0, 1.0, 0.5, 0.0])  # indexed by position
    index = torch.tensor([1, 2, 3])  # weights 1, 0.5, 0
    loss = trainer.batch_loss(logits, y, index)
    # (1 log 2 + 0.5 log 4 + 0 * ...) / (1 + 0.5) = (4/3) log 2
    assert loss.item() == pytest.approx(4.0 / 3.0 * math.log(2.0), rel=1e-6)
    trainer.train_weights = torch.zeros(4)
    assert trainer.batch_loss(logits, y, index).item() == 0.0
    trainer.train_weights = None  # no weights: the loss's own mean
    plain = trainer.batch_loss(logits, y, index)
    expected = (math.log(2.0) + math.log(4.0) + math.log1p(math.exp(-10.0))) / 3
    assert plain.item() == pytest.approx(expected, rel=1e-6)
