"""From a validated config to a finished run: splits, model, loss, training, metrics on disk.

This is the glue the CLI and every search call; it owns the layout of a run directory:

    run_dir/config.yaml     the resolved config (every default written out)
    run_dir/data.json       split sizes, class counts and the realised noise rate
    run_dir/checkpoint.pt   the last finished epoch (atomic; ``--resume`` continues from it)
    run_dir/metrics.json    validation and test metrics of the selected epoch, the history, and
                            the temperature fitted on the meta set (``calibration``)

Everything a config names (source, model, loss, method, their options, the noise matrix) is checked
before the run directory is created; a directory created by a run that fails before its first
checkpoint is removed again, and a directory holding a run is never overwritten silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from autorobust._io import exclusive_directory, missing_directories, write_json, write_text
from autorobust.config import ExperimentConfig, validate_config
from autorobust.data.base import SOURCES, create_source
from autorobust.data.relabel import read_relabel_file, relabel_file_sha256
from autorobust.data.splits import Splits, make_splits
from autorobust.data.tensors import Normalization, images_to_tensor, resolve_device
from autorobust.errors import AutorobustError, ConfigError
from autorobust.losses import ClassificationLoss, create_loss
from autorobust.losses.registry import loss_hyperparameter_names
from autorobust.models import Classifier, create_model
from autorobust.models.registry import model_option_names
from autorobust.train.calibration import calibration_report
from autorobust.train.metrics import classification_metrics
from autorobust.train.registry import TRAINERS, create_trainer
from autorobust.train.threads import apply_threads
from autorobust.train.trainer import CHECKPOINT_NAME, EpochRecord, load_checkpoint, predict

__all__ = [
    "RunResult",
    "build_loss",
    "build_model",
    "build_splits",
    "check_config",
    "config_fingerprint",
    "evaluate_run",
    "load_best_model",
    "load_run_config",
    "remove_temporary_files",
    "train_run",
]

_log = logging.getLogger(__name__)

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


def _unknown_options(given: dict[str, Any], accepted: list[str], field: str, what: str) -> None:
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{field}: {what} has no option {unknown[0]!r}; accepted: "
            f"{', '.join(accepted) or '(none)'}"
        )


def check_config(config: ExperimentConfig) -> None:
    """Check every name a config gives against the registries, without reading data or writing.

    The data source and its options (a source's constructor does no work, so its option values
    are checked too), the model, the loss and their option names, and the training method.

    Raises:
        AutorobustError: one line that starts with the field, e.g. ``model.name: unknown model
            'vgg'; valid: ...`` or ``loss.options: loss 'focal' has no option 'gama'; ...``.
    """
    import autorobust.data.sources  # noqa: F401 - registers the sources

    def field(path: str, check: Callable[[], Any]) -> Any:
        try:
            return check()
        except AutorobustError as exc:
            raise type(exc)(f"{path}: {exc}") from None

    field("data.source", lambda: SOURCES.get(config.data.source))
    field("data.options", lambda: create_source(config.data.source, **config.data.options))
    model, loss = config.model, config.loss
    accepted = field("model.name", lambda: model_option_names(model.name))
    _unknown_options(model.options, accepted, "model.options", f"model {model.name!r}")
    accepted = field("loss.name", lambda: loss_hyperparameter_names(loss.name))
    _unknown_options(loss.options, accepted, "loss.options", f"loss {loss.name!r}")
    field("method", lambda: TRAINERS.get(config.method))


def build_splits(config: ExperimentConfig) -> Splits:
    """Load the configured source and apply the configured shift (seeded by ``config.seed``), then
    the relabel file ``data.relabel_file`` if one is given (the training pool is then the kept
    samples with their new labels; see :func:`autorobust.data.splits.apply_relabel`).

    The meta set is the source's trusted set when it has one; a source of the user's own images
    without one logs a one-line warning (on stderr unless logging is configured otherwise) that
    the meta set was drawn from unverified labels."""
    import autorobust.data.sources  # noqa: F401 - registers the sources

    loader = create_source(config.data.source, **config.data.options)
    source = loader.load()
    if loader.user_data and source.meta is None:
        _log.warning(
            "warning: data.source %r has no trusted set, so the meta set (model selection, "
            "calibration) was drawn from unverified labels; see README, 'Your own trusted set'",
            config.data.source,
        )
    shift = config.shift
    matrix = shift.noise_matrix
    if matrix is not None and len(matrix) != source.num_classes:
        raise ConfigError(
            f"shift.noise_matrix: is {len(matrix)} x {len(matrix)}, but data source "
            f"{config.data.source!r} has {source.num_classes} classes"
        )
    relabel_file = config.data.relabel_file
    relabel = None if relabel_file is None else read_relabel_file(relabel_file)
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
        relabel=relabel,
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
    """Hash of everything that determines the trained weights (not run_dir, device, progress,
    threads, the search or the design section).

    A relabel file enters by the SHA-256 of its content, not by its path: a run cannot resume on
    labels that changed, and moving the file changes nothing. Without one, the hash is the same
    as before ``data.relabel_file`` existed, so older checkpoints still resume. The
    ``pseudo_label`` section enters only for ``method: pseudo_label``, the one method that reads
    it (so the hashes of other runs are those from before the section existed).

    Raises:
        DataError: ``data.relabel_file`` is set but cannot be read.
    """
    relevant = config.to_dict()
    # The design section says how `autorobust design` composes runs; each run it trains carries
    # its choices in the other sections.
    for key in ("run_dir", "device", "search", "design"):
        relevant.pop(key)
    if relevant["method"] != "pseudo_label":
        relevant.pop("pseudo_label")
    noise_model_file = relevant["loss"]["options"].get("noise_model_file")
    if isinstance(noise_model_file, str) and Path(noise_model_file).is_file():
        # As for the relabel file: the content decides the weights, not where it lies.
        relevant["loss"]["options"]["noise_model_file"] = hashlib.sha256(
            Path(noise_model_file).read_bytes()
        ).hexdigest()
    relabel_file = relevant["data"].pop("relabel_file")
    if relabel_file is not None:
        relevant["data"]["relabel_sha256"] = relabel_file_sha256(relabel_file)
    relevant["train"].pop("progress")
    relevant["train"].pop("threads")  # changes the last bits at most, like the device
    if not relevant["train"]["record_dynamics"]:
        # Recording changes no weight; off, the hash is the one from before the field existed.
        relevant["train"].pop("record_dynamics")
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
    overwrite: bool = False,
    callbacks: Sequence[Callable[[EpochRecord], None]] = (),
    splits: Splits | None = None,
    evaluate_test: bool = True,
) -> RunResult:
    """Train ``config`` in ``config.run_dir`` and write config, data summary and metrics there.

    The config is checked, the splits built and the model, loss and trainer created before the
    run directory is created or anything is written to it. When the run fails before its first
    checkpoint, a run directory (and parent folders) this call created is removed again.

    Args:
        config: the validated run configuration.
        resume: continue from the run directory's checkpoint (an error if it belongs to another
            configuration); a finished run trains no more and rewrites its metrics.
        overwrite: replace a run already in the directory: its checkpoint and metrics are
            deleted before training starts.
        callbacks: per-epoch callbacks (a search reports and prunes through them).
        splits: pre-built splits (a search builds them once for all trials); None: build them.
        evaluate_test: measure the test split; a search trial passes False so that nothing of the
            test split is even computed before the search has chosen.

    Returns:
        The run directory and the metrics written to ``metrics.json``.

    Raises:
        AutorobustError: an invalid config, data or setting; the directory holds a run
            (``checkpoint.pt`` or ``metrics.json``) and neither ``resume`` nor ``overwrite`` is
            set; the directory is in use by another process; a file cannot be written.
        ValueError: both ``resume`` and ``overwrite``.
    """
    if resume and overwrite:
        raise ValueError("train_run: resume and overwrite exclude each other")
    check_config(config)
    device = resolve_device(config.device)
    apply_threads(config.train.threads)  # again for every run: workers may have come or gone
    started = time.perf_counter()
    splits = build_splits(config) if splits is None else splits
    run_dir = Path(config.run_dir)
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
    if splits.train.weights is not None and not trainer.applies_sample_weights():
        raise ConfigError(
            f"data.relabel_file: {config.data.relabel_file} holds per-sample weights, which "
            f"method {config.method!r} does not apply; use a file without weights or a method "
            "that trains through Trainer.batch_loss (erm)"
        )
    train_data, val_data = trainer.fit_data(splits)
    with _run_directory(run_dir, resume=resume, overwrite=overwrite):
        if resume:  # refused before anything in the run directory changes
            _check_resumable(run_dir, trainer.fingerprint, config.train.record_dynamics)
        write_text(run_dir / CONFIG_NAME, yaml.safe_dump(config.to_dict(), sort_keys=False))
        write_json(run_dir / DATA_NAME, splits.summary())
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
            # The temperature `autorobust predict` and `load_model` divide the logits by; fitted
            # on the meta set that also selected the epoch (README, "Predicting").
            "calibration": calibration_report(
                predict(
                    result.model, images_to_tensor(splits.meta.images, device), trainer.normalize
                ).numpy(),
                splits.meta.labels,
                splits.num_classes,
            ),
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


@contextmanager
def _run_directory(run_dir: Path, *, resume: bool, overwrite: bool) -> Iterator[Path]:
    """Hold ``run_dir`` (created if needed, locked) for one training run.

    Without ``resume`` or ``overwrite``, a directory holding a run is refused (before the lock
    file is created, and again under the lock). With ``overwrite``, that run's checkpoint and
    metrics are deleted. If the block fails before a checkpoint exists, the folders this call
    created are removed again, so a refused or failed run leaves nothing behind.
    """
    fresh = not resume and not overwrite
    if fresh:
        _refuse_existing_run(run_dir)
    created = missing_directories(run_dir)
    with exclusive_directory(run_dir):
        try:
            if fresh:
                _refuse_existing_run(run_dir)
            remove_temporary_files(run_dir)
            if overwrite:
                for name in (CHECKPOINT_NAME, METRICS_NAME):
                    (run_dir / name).unlink(missing_ok=True)
            yield run_dir
        except BaseException:
            # Removed while the lock is held, so no other run can have started in it meanwhile.
            if created and not (run_dir / CHECKPOINT_NAME).exists():
                _remove_created(created)
            raise


def remove_temporary_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files that :func:`autorobust._io.atomic_write` leaves in ``run_dir``
    (not its subfolders) when its process is killed mid-write (``.checkpoint.pt.*.tmp``).

    Call it only while holding the directory's lock: no other process can be writing there then,
    so every such file is stale. Returns the files deleted.
    """
    removed = []
    for path in Path(run_dir).glob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _check_resumable(run_dir: Path, fingerprint: str, record_dynamics: bool) -> None:
    """Refuse ``--resume`` on a checkpoint this configuration cannot continue, before the run
    directory is written to: a refused command changes nothing there."""
    path = run_dir / CHECKPOINT_NAME
    if not path.is_file():
        return
    checkpoint = load_checkpoint(path)
    if checkpoint.get("fingerprint", "") != fingerprint:
        raise AutorobustError(
            f"{path}: checkpoint was written by a different configuration (config or "
            "relabel file changed); pass --overwrite to replace that run, or choose another "
            "--run-dir"
        )
    if record_dynamics and "dynamics" not in checkpoint:
        raise AutorobustError(
            f"{path}: checkpoint has no recorded dynamics (written without "
            "train.record_dynamics); pass --overwrite to train again with them, or choose "
            "another --run-dir"
        )


def _refuse_existing_run(run_dir: Path) -> None:
    if (run_dir / METRICS_NAME).is_file():
        held = f"a finished run ({METRICS_NAME})"
    elif (run_dir / CHECKPOINT_NAME).is_file():
        held = f"an unfinished run ({CHECKPOINT_NAME})"
    else:
        return
    raise AutorobustError(
        f"{run_dir}: holds {held}; pass --resume to continue it, --overwrite to replace it, "
        "or choose another --run-dir"
    )


def _remove_created(created: list[Path]) -> None:
    """Remove the run directory (the last of ``created``) and the parents created with it."""
    shutil.rmtree(created[-1], ignore_errors=True)
    for folder in reversed(created[:-1]):
        try:
            folder.rmdir()
        except OSError:  # another process put something there meanwhile: keep it
            break


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


def load_best_model(
    config: ExperimentConfig, splits: Splits, *, device: torch.device | str = "cpu"
) -> tuple[Classifier, Normalization, dict[str, Any]]:
    """The selected weights of the run in ``config.run_dir``, ready to predict.

    Returns:
        (the model with its ``best_model`` weights on ``device``, the standardisation it was
        trained with, the checkpoint), read with ``weights_only=True``.

    Raises:
        AutorobustError: no readable checkpoint, or one written by another configuration.
    """
    run_dir = Path(config.run_dir)
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt", map_location=device)
    if checkpoint["fingerprint"] != config_fingerprint(config):
        raise AutorobustError(f"{run_dir}: checkpoint and config.yaml do not belong together")
    model = build_model(config, splits).to(device)
    model.load_state_dict(checkpoint["best_model"])
    stats = checkpoint.get("normalization")  # absent in checkpoints of earlier versions
    if stats is None:
        normalize = Normalization.from_images(splits.train.images)
    else:
        normalize = Normalization(tuple(stats["mean"]), tuple(stats["std"]))
    return model, normalize, checkpoint


def evaluate_run(run_dir: str | Path, *, device: str | None = None) -> dict[str, Any]:
    """Re-evaluate the selected weights of a run on its test split; rewrites ``metrics.json``.

    The splits are rebuilt from the saved config (they are a deterministic function of it) and the
    weights read from the checkpoint with ``weights_only=True``.
    """
    config = load_run_config(run_dir)
    run_dir = Path(run_dir)
    resolved = resolve_device(device or config.device)
    splits = build_splits(config)
    model, normalize, checkpoint = load_best_model(config, splits, device=resolved)
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
