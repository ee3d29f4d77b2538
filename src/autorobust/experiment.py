"""From a validated config to a finished run: splits, model, loss, training, metrics on disk.

This is the glue the CLI and every search call; it owns the layout of a run directory:

    run_dir/config.yaml     the resolved config (every default written out)
    run_dir/data.json       split sizes, class counts and the realised noise rate
    run_dir/checkpoint.pt   the last finished epoch (atomic; ``--resume`` continues from it)
    run_dir/metrics.json    validation and test metrics of the selected epoch, and the history
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from autorobust._io import exclusive_directory, write_json, write_text
from autorobust.config import ExperimentConfig, validate_config
from autorobust.data.base import create_source
from autorobust.data.splits import Splits, make_splits
from autorobust.data.tensors import Normalization, images_to_tensor, resolve_device
from autorobust.errors import AutorobustError
from autorobust.losses import ClassificationLoss, create_loss
from autorobust.models import Classifier, create_model
from autorobust.train.metrics import classification_metrics
from autorobust.train.registry import create_trainer
from autorobust.train.trainer import EpochRecord, load_checkpoint, predict

__all__ = [
    "RunResult",
    "build_loss",
    "build_model",
    "build_splits",
    "config_fingerprint",
    "evaluate_run",
    "load_run_config",
    "train_run",
]

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.json"
DATA_NAME = "data.json"


@dataclass(frozen=True)
class RunResult:
    """What :func:`train_run` wrote to ``run_dir/metrics.json``, and where."""

    run_dir: Path
    metrics: dict[str, Any]

    @property
    def test(self) -> dict[str, Any]:
        return self.metrics["test"]


def build_splits(config: ExperimentConfig) -> Splits:
    """Load the configured source and apply the configured shift (seeded by ``config.seed``)."""
    import autorobust.data.sources  # noqa: F401 - registers the sources

    source = create_source(config.data.source, **config.data.options).load()
    shift = config.shift
    return make_splits(
        source,
        meta_per_class=config.data.meta_per_class,
        imbalance=shift.imbalance,
        rho=shift.rho,
        mu=shift.mu,
        n_max=shift.n_max,
        noise=shift.noise,
        noise_rate=shift.noise_rate,
        noise_matrix=None if shift.noise_matrix is None else np.asarray(shift.noise_matrix),
        include_true_class=shift.include_true_class,
        unlabeled_fraction=config.data.unlabeled_fraction,
        seed=config.seed,
    )


def build_model(config: ExperimentConfig, splits: Splits) -> Classifier:
    """Create the configured model; its initial weights depend only on ``config.seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return create_model(
            config.model.name,
            num_classes=splits.num_classes,
            in_channels=splits.train.images.shape[-1],
            **config.model.options,
        )


def build_loss(config: ExperimentConfig, splits: Splits) -> ClassificationLoss:
    """Create the configured loss with the training split's observed class counts."""
    return create_loss(
        config.loss.name, class_counts=splits.train_class_counts, **config.loss.options
    )


def config_fingerprint(config: ExperimentConfig) -> str:
    """Hash of everything that determines the trained weights (not run_dir, device or progress)."""
    relevant = config.to_dict()
    for key in ("run_dir", "device", "search"):
        relevant.pop(key)
    relevant["train"].pop("progress")
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _evaluate(
    model: torch.nn.Module,
    normalize: Normalization,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    device: torch.device,
    train_class_counts: np.ndarray | None = None,
) -> dict[str, Any]:
    logits = predict(model, images_to_tensor(images, device), normalize)
    probabilities = torch.softmax(logits, dim=1).numpy()
    return classification_metrics(
        labels,
        probabilities.argmax(1),
        num_classes,
        probabilities=probabilities,
        train_class_counts=train_class_counts,
    )


def train_run(
    config: ExperimentConfig,
    *,
    resume: bool = False,
    callbacks: Sequence[Callable[[EpochRecord], None]] = (),
    splits: Splits | None = None,
    evaluate_test: bool = True,
) -> RunResult:
    """Train ``config`` in ``config.run_dir`` and write config, data summary and metrics there.

    Args:
        config: the validated run configuration.
        resume: continue from the run directory's checkpoint (an error if it belongs to another
            configuration).
        callbacks: per-epoch callbacks (a search reports and prunes through them).
        splits: pre-built splits (a search builds them once for all trials); None: build them.
        evaluate_test: measure the test split; a search trial passes False so that nothing of the
            test split is even computed before the search has chosen.

    Returns:
        The run directory and the metrics written to ``metrics.json``.
    """
    with exclusive_directory(config.run_dir) as run_dir:
        return _train_locked(config, run_dir, resume, callbacks, splits, evaluate_test)


def _train_locked(
    config: ExperimentConfig,
    run_dir: Path,
    resume: bool,
    callbacks: Sequence[Callable[[EpochRecord], None]],
    splits: Splits | None,
    evaluate_test: bool,
) -> RunResult:
    device = resolve_device(config.device)
    started = time.perf_counter()
    splits = build_splits(config) if splits is None else splits
    write_text(run_dir / CONFIG_NAME, yaml.safe_dump(config.to_dict(), sort_keys=False))
    write_json(run_dir / DATA_NAME, splits.summary())
    trainer = create_trainer(
        config.method,
        config,
        splits,
        model=build_model(config, splits),
        loss=build_loss(config, splits),
        settings=config.train,
        device=device,
        seed=config.seed,
        run_dir=run_dir,
        callbacks=callbacks,
        fingerprint=config_fingerprint(config),
    )
    train_data, val_data = trainer.fit_data(splits)
    result = trainer.fit(train_data, val_data, resume=resume)
    counts = splits.train_class_counts
    metrics: dict[str, Any] = {
        "run": {
            "seed": config.seed,
            "device": str(device),
            "model": config.model.name,
            "loss": config.loss.name,
            "epochs": trainer.settings.epochs,
            "best_epoch": result.best_epoch,
            "wall_time_s": time.perf_counter() - started,
            "seconds_per_epoch": float(np.mean([r.seconds for r in result.history])),
        },
        "data": splits.summary(),
        "validation": _evaluate(
            result.model,
            trainer.normalize,
            splits.meta.images,
            splits.meta.labels,
            splits.num_classes,
            device,
        ),
        "history": [record.to_dict() for record in result.history],
    }
    method_metrics = trainer.extra_metrics(train_data)
    if method_metrics:
        metrics["method"] = method_metrics
    if evaluate_test:
        metrics["test"] = _evaluate(
            result.model,
            trainer.normalize,
            splits.test.images,
            splits.test.labels,
            splits.num_classes,
            device,
            counts,
        )
    write_json(run_dir / METRICS_NAME, metrics)
    return RunResult(run_dir=run_dir, metrics=metrics)


def load_run_config(run_dir: str | Path) -> ExperimentConfig:
    """The config a run directory was trained with (``run_dir/config.yaml``)."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise AutorobustError(f"{path}: missing; is {run_dir} an autorobust run directory?")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        raise AutorobustError(f"{path}: not a valid YAML config") from None
    config = validate_config(raw, where=str(path))
    return config.model_copy(update={"run_dir": str(run_dir)})


def evaluate_run(run_dir: str | Path, *, device: str | None = None) -> dict[str, Any]:
    """Re-evaluate the selected weights of a run on its test split; rewrites ``metrics.json``.

    The splits are rebuilt from the saved config (they are a deterministic function of it) and the
    weights read from the checkpoint with ``weights_only=True``.
    """
    config = load_run_config(run_dir)
    run_dir = Path(run_dir)
    resolved = resolve_device(device or config.device)
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt", map_location=resolved)
    if checkpoint["fingerprint"] != config_fingerprint(config):
        raise AutorobustError(f"{run_dir}: checkpoint and config.yaml do not belong together")
    splits = build_splits(config)
    model = build_model(config, splits).to(resolved)
    model.load_state_dict(checkpoint["best_model"])
    normalize = Normalization.from_images(splits.train.images)
    metrics_path = run_dir / METRICS_NAME
    metrics: dict[str, Any] = {}
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            metrics = {}  # rewritten below from the checkpoint
    metrics.setdefault("history", checkpoint["history"])
    metrics["run"] = {
        **metrics.get("run", {}),
        "best_epoch": checkpoint["best_epoch"],
        "epochs_completed": checkpoint["epoch"],
    }
    metrics["data"] = splits.summary()
    metrics["validation"] = _evaluate(
        model, normalize, splits.meta.images, splits.meta.labels, splits.num_classes, resolved
    )
    metrics["test"] = _evaluate(
        model,
        normalize,
        splits.test.images,
        splits.test.labels,
        splits.num_classes,
        resolved,
        splits.train_class_counts,
    )
    write_json(metrics_path, metrics)
    return metrics
