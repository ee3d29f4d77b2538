"""Empirical-risk-minimisation trainer: SGD with momentum, checkpoints, exact resume.

The loop is meant to be read in one sitting. Later methods (reweighting, bilevel loss learning)
subclass :class:`Trainer` and override :meth:`Trainer.training_step`, plus
:meth:`Trainer.extra_state` / :meth:`Trainer.load_extra_state` for what they must checkpoint.

Determinism: the shuffling, the augmentation and every use of torch's global generator inside an
epoch (dropout) derive from ``(seed, epoch)``, so an epoch's outcome depends only on the weights and
optimiser state it starts from. A run resumed from the checkpoint of epoch k therefore ends with
exactly the same weights as an uninterrupted run (on CPU; CUDA kernels may be nondeterministic).
"""

from __future__ import annotations

import copy
import math
import pickle
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from autorobust._io import atomic_write
from autorobust.config import TrainConfig
from autorobust.data.augment import BatchAugment
from autorobust.data.tensors import Normalization, images_to_tensor, to_unit_float
from autorobust.errors import AutorobustError, ConfigError
from autorobust.losses.base import ClassificationLoss
from autorobust.train.dynamics import (
    DYNAMICS_NAME,
    DynamicsRecorder,
    TrainingDynamics,
    write_dynamics,
)
from autorobust.train.metrics import classification_metrics
from autorobust.train.schedule import lr_factor

if TYPE_CHECKING:
    from autorobust.data.splits import Splits

__all__ = ["CHECKPOINT_NAME", "EpochRecord", "LabeledImages", "TrainResult", "Trainer", "predict"]

CHECKPOINT_NAME = "checkpoint.pt"
_CHECKPOINT_VERSION = 1
# torch.save writes a zip archive; anything else is refused before torch reads a byte of it.
_ZIP_MAGIC = b"PK\x03\x04"
# The global a weights-only load refused, as torch names it (the rest of its text is not shown).
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


class LabeledImages(Protocol):
    """Anything with uint8 ``images`` (N, H, W, C) and int64 ``labels`` (N,)."""

    # read-only, so that frozen dataclasses (ImageDataset, TrainingPool) conform
    @property
    def images(self) -> np.ndarray: ...

    @property
    def labels(self) -> np.ndarray: ...


class _GroupSensitiveLoss(Protocol):
    """A loss with per-group parameters (``uses_groups`` true, e.g. AutoBalance's): its
    per-sample losses also take the batch's group attributes int64 (B,)."""

    def per_sample(
        self, logits: torch.Tensor, target: torch.Tensor, groups: torch.Tensor
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch produced; ``val_*`` are measured on the validation (meta) split."""

    epoch: int
    train_loss: float
    val_balanced_accuracy: float
    val_accuracy: float
    lr: float
    seconds: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`; ``model`` holds the weights of ``best_epoch``;
    ``dynamics`` the recorded margins and losses (N, epochs) with ``train.record_dynamics``."""

    model: nn.Module
    best_epoch: int
    best_score: float
    history: list[EpochRecord] = field(default_factory=list)
    dynamics: TrainingDynamics | None = None


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    normalize: Normalization,
    *,
    batch_size: int = 512,
) -> torch.Tensor:
    """Logits (N, K) float32 on CPU for uint8 images (N, C, H, W) on the model's device."""
    was_training = model.training
    model.eval()
    try:
        chunks = [
            model(normalize(images[i : i + batch_size])).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0)


class Trainer:
    """Trains ``model`` on a training split, selecting the epoch by balanced accuracy on validation.

    During :meth:`fit`, ``train_images`` / ``val_images`` (uint8 (N, C, H, W) on ``device``),
    ``train_labels`` / ``val_labels`` (int64 (N,)), ``train_groups`` (int64 (N,) or None),
    ``train_weights`` (float32 (N,) per-sample weights of a relabel file, or None) and
    ``normalize`` are available to subclasses.

    Args:
        model: a classifier taking normalised float images (B, C, H, W) to logits (B, K).
        loss: the training loss (per-sample losses and their mean).
        settings: optimiser, schedule, epochs, batch size, augmentation.
        device: where to train.
        seed: seeds shuffling, augmentation and dropout (see the module docstring).
        run_dir: where ``checkpoint.pt`` is written after every epoch; None: no checkpoints.
        callbacks: called with each :class:`EpochRecord` after its checkpoint is written; a search
            uses this to report intermediate values (and may raise to prune the trial).
    """

    sample_weights: ClassVar[bool | None] = None
    """Whether the training data's per-sample weights reach the loss. None (the default): exactly
    when :meth:`training_step` is not overridden, since the default step computes its loss with
    :meth:`batch_loss`, which applies them. A subclass that overrides the step and calls
    :meth:`batch_loss` sets True."""

    dynamics: ClassVar[bool | None] = None
    """Whether ``train.record_dynamics`` is supported: :meth:`batch_loss` records the margins and
    losses of the training forward pass, which requires it to be called exactly once per step on
    the whole batch. None (the default): exactly when :meth:`training_step` is not overridden."""

    def __init__(
        self,
        *,
        model: nn.Module,
        loss: ClassificationLoss,
        settings: TrainConfig,
        device: torch.device,
        seed: int,
        run_dir: Path | None = None,
        callbacks: Sequence[Callable[[EpochRecord], None]] = (),
        fingerprint: str = "",
    ) -> None:
        self.model = model.to(device)
        self.loss = loss.to(device)
        self.settings = settings
        self.device = device
        self.seed = seed
        self.run_dir = run_dir
        self.callbacks = list(callbacks)
        self.fingerprint = fingerprint
        self.augment = BatchAugment(**settings.augment.model_dump())
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=settings.lr,
            momentum=settings.momentum,
            nesterov=settings.nesterov and settings.momentum > 0,
            weight_decay=settings.weight_decay,
        )
        if settings.record_dynamics and not self.records_dynamics():
            raise ConfigError(
                f"train.record_dynamics: {type(self).__name__} does not record training dynamics "
                "(it trains without Trainer's own step); set it to false"
            )
        self._recorder: DynamicsRecorder | None = None

    # -- hooks for subclasses ------------------------------------------------------------------

    def training_step(
        self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, step: int
    ) -> torch.Tensor:
        """One optimisation step on a batch; returns the (detached) training loss.

        Args:
            x: normalised, augmented images (B, C, H, W) float32.
            y: observed labels (B,) int64.
            index: positions of the batch's samples in the training split (B,) int64.
            step: global optimisation step (0-based).
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.batch_loss(self.model(x), y, index)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def batch_loss(
        self, logits: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        """Mean training loss of a batch: logits (B, K), labels (B,), positions ``index`` (B,).

        A loss with per-group parameters (``uses_groups``, e.g. AutoBalance's group-sensitive
        loss) also receives the batch's group attributes. When the training data carry
        per-sample weights w (a relabel file's confidences), the loss is the weighted mean
        sum_i w_i l_i / sum_i w_i of the per-sample losses l_i (0 for a batch whose weights are
        all 0); without weights it is the loss's own mean, computed exactly as before.

        With ``train.record_dynamics``, the margins of ``logits`` and the per-sample losses are
        recorded for the samples ``index`` (:mod:`autorobust.train.dynamics`); the loss returned
        is the same, bit for bit.
        """
        weights = getattr(self, "train_weights", None)
        recorder = getattr(self, "_recorder", None)
        groups: torch.Tensor | None = None
        if getattr(self.loss, "uses_groups", False):
            if self.train_groups is None:
                raise AutorobustError(
                    f"loss {type(self.loss).__name__} has per-group parameters, but the training "
                    "data carries no group attributes"
                )
            groups = self.train_groups[index]
        if weights is None:
            if recorder is not None:
                with torch.no_grad():  # a second evaluation, so the returned loss is unchanged
                    recorder.record(logits, y, self._per_sample(logits, y, groups), index)
            if groups is None:
                return self.loss(logits, y)
            return self.loss(logits, y, groups=groups)
        losses = self._per_sample(logits, y, groups)
        if recorder is not None:
            recorder.record(logits, y, losses, index)
        w = weights[index].to(losses.dtype)
        # The clamp only matters for an all-zero batch, whose weighted sum is 0 already.
        return (w * losses).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)

    def _per_sample(
        self, logits: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None
    ) -> torch.Tensor:
        if groups is not None:
            group_loss = cast(_GroupSensitiveLoss, self.loss)  # uses_groups: it takes groups
            return group_loss.per_sample(logits, y, groups=groups)
        return self.loss.per_sample(logits, y)

    @classmethod
    def records_dynamics(cls) -> bool:
        """Whether this trainer supports ``train.record_dynamics`` (see :attr:`dynamics`)."""
        if cls.dynamics is not None:
            return cls.dynamics
        return cls.training_step is Trainer.training_step

    @classmethod
    def applies_sample_weights(cls) -> bool:
        """Whether this trainer applies per-sample weights (see :attr:`sample_weights`)."""
        if cls.sample_weights is not None:
            return cls.sample_weights
        return cls.training_step is Trainer.training_step

    def fit_data(self, splits: Splits) -> tuple[LabeledImages, LabeledImages]:
        """(training data, validation data) a run of ``splits`` fits on: the training pool and the
        clean meta split. A method that trains on other data (AutoBalance's two levels) overrides
        it; :func:`~autorobust.experiment.train_run` calls it."""
        return splits.train, splits.meta

    def on_fit_start(self) -> None:
        """Called once the split tensors exist, before the first (or resumed) epoch."""

    def extra_metrics(self, train: LabeledImages) -> dict[str, Any]:
        """Method-specific results for ``metrics.json`` (under ``"method"``), after :meth:`fit`.

        ``train`` is the training split passed to :meth:`fit`; a
        :class:`~autorobust.data.splits.TrainingPool` also carries ``clean_labels`` and
        ``noise_mask``, e.g. for how well learned sample weights separate noisy from clean samples.
        """
        return {}

    def extra_state(self) -> dict[str, Any]:
        """State a subclass needs checkpointed besides model, optimiser and scheduler."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    # -- the loop ------------------------------------------------------------------------------

    def fit(self, train: LabeledImages, val: LabeledImages, *, resume: bool = False) -> TrainResult:
        """Train for ``settings.epochs`` epochs; return the model at its best validation epoch.

        Args:
            train: the training split (observed, possibly noisy labels).
            val: the clean validation / meta split used for model selection (never the test set).
            resume: continue from ``run_dir/checkpoint.pt``; without one, start afresh.

        Raises:
            KeyboardInterrupt: on Ctrl-C; the checkpoint of the last finished epoch stays on disk.
        """
        settings = self.settings
        # Kept as attributes for subclasses (a meta-step draws batches of the validation split).
        self.normalize = Normalization.from_images(train.images)
        self.train_images = x_train = images_to_tensor(train.images, self.device)
        self.train_labels = y_train = torch.as_tensor(
            train.labels, dtype=torch.int64, device=self.device
        )
        self.val_images = x_val = images_to_tensor(val.images, self.device)
        self.val_labels = torch.as_tensor(val.labels, dtype=torch.int64, device=self.device)
        groups = getattr(train, "groups", None)
        self.train_groups = (
            None
            if groups is None
            else torch.as_tensor(groups, dtype=torch.int64, device=self.device)
        )
        weights = getattr(train, "weights", None)
        if weights is not None and not self.applies_sample_weights():
            raise ConfigError(
                f"the training data carry per-sample weights, which {type(self).__name__} "
                "does not apply (it trains without Trainer.batch_loss)"
            )
        self.train_weights = (
            None
            if weights is None
            else torch.as_tensor(weights, dtype=torch.float32, device=self.device)
        )
        self._recorder = (
            DynamicsRecorder(y_train, settings.epochs, self.device)
            if settings.record_dynamics
            else None
        )
        num_classes = int(getattr(self.model, "num_classes", int(train.labels.max()) + 1))
        self.augment.check_classes(num_classes)
        steps_per_epoch = math.ceil(len(x_train) / settings.batch_size)
        total_steps = settings.epochs * steps_per_epoch
        self.scheduler = scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_factor(
                step,
                total_steps,
                schedule=settings.schedule,
                warmup_steps=settings.warmup_epochs * steps_per_epoch,
                milestones=settings.milestones,
                gamma=settings.gamma,
            ),
        )
        self.on_fit_start()
        start_epoch, best_epoch, best_score = 0, -1, -math.inf
        best_state = copy.deepcopy(self.model.state_dict())
        history: list[EpochRecord] = []
        if resume:
            checkpoint = self._load_checkpoint()
            if checkpoint is not None:
                self.model.load_state_dict(checkpoint["model"])
                self.optimizer.load_state_dict(checkpoint["optimizer"])
                scheduler.load_state_dict(checkpoint["scheduler"])
                self.load_extra_state(checkpoint["extra"])
                start_epoch = checkpoint["epoch"]
                best_epoch, best_score = checkpoint["best_epoch"], checkpoint["best_score"]
                best_state = checkpoint["best_model"]
                history = [EpochRecord(**record) for record in checkpoint["history"]]
                if self._recorder is not None:
                    if "dynamics" not in checkpoint:
                        raise AutorobustError(
                            f"{self.checkpoint_path}: checkpoint has no recorded dynamics "
                            "(written without train.record_dynamics); replace that run "
                            "(--overwrite) or use another run_dir"
                        )
                    self._recorder.load_state(checkpoint["dynamics"], self.checkpoint_path)

        bar = tqdm(
            total=settings.epochs,
            initial=start_epoch,
            desc="train",
            unit="epoch",
            disable=not settings.progress,
            leave=False,
        )
        with bar:
            for epoch in range(start_epoch, settings.epochs):
                started = time.perf_counter()
                self.loss.on_epoch_start(epoch, settings.epochs)
                train_loss = self._train_epoch(x_train, y_train, epoch, steps_per_epoch)
                logits = predict(self.model, x_val, self.normalize)
                metrics = classification_metrics(val.labels, logits.argmax(1).numpy(), num_classes)
                score = metrics["balanced_accuracy"]
                record = EpochRecord(
                    epoch=epoch,
                    train_loss=train_loss,
                    val_balanced_accuracy=score,
                    val_accuracy=metrics["accuracy"],
                    lr=self.optimizer.param_groups[0]["lr"],
                    seconds=time.perf_counter() - started,
                )
                history.append(record)
                if score > best_score:
                    best_epoch, best_score = epoch, score
                    best_state = copy.deepcopy(self.model.state_dict())
                self._save_checkpoint(
                    epoch=epoch + 1,
                    scheduler=scheduler,
                    best_epoch=best_epoch,
                    best_score=best_score,
                    best_state=best_state,
                    history=history,
                )
                bar.set_postfix(loss=f"{train_loss:.3f}", val_bacc=f"{score:.3f}")
                bar.update(1)
                for callback in self.callbacks:
                    callback(record)

        final = copy.deepcopy(self.model)
        final.load_state_dict(best_state)
        dynamics = None if self._recorder is None else self._recorder.result()
        if dynamics is not None and self.run_dir is not None:
            write_dynamics(Path(self.run_dir) / DYNAMICS_NAME, dynamics)
        return TrainResult(
            model=final,
            best_epoch=best_epoch,
            best_score=best_score,
            history=history,
            dynamics=dynamics,
        )

    def _train_epoch(
        self, x_train: torch.Tensor, y_train: torch.Tensor, epoch: int, steps_per_epoch: int
    ) -> float:
        seed = _epoch_seed(self.seed, epoch)
        if self._recorder is not None:
            self._recorder.epoch = epoch
        generator = torch.Generator(device=self.device).manual_seed(seed)
        order = torch.randperm(len(x_train), generator=generator, device=self.device)
        batch_size = self.settings.batch_size
        total, count = torch.zeros((), device=self.device), 0
        self.model.train()
        # Dropout and other layers draw from torch's global generator: fork it so an epoch is a
        # function of (seed, epoch) and the caller's global state is left as it was.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            torch.manual_seed(seed)
            for i in range(steps_per_epoch):
                index = order[i * batch_size : (i + 1) * batch_size]
                # Augment intensities in [0, 1] (jitter clamps there), then standardise.
                x = self.normalize.standardize(
                    self.augment(to_unit_float(x_train[index]), generator, y_train[index])
                )
                loss = self.training_step(x, y_train[index], index, epoch * steps_per_epoch + i)
                self.scheduler.step()  # per optimisation step: the schedule is a function of it
                if not torch.isfinite(loss):
                    raise AutorobustError(
                        f"training diverged at epoch {epoch}, step {i}: loss is {loss.item()}; "
                        "lower train.lr"
                    )
                total += loss * len(index)
                count += len(index)
        return float(total) / max(count, 1)

    # -- checkpoints ---------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else Path(self.run_dir) / CHECKPOINT_NAME

    def _save_checkpoint(self, *, epoch, scheduler, best_epoch, best_score, best_state, history):
        path = self.checkpoint_path
        if path is None:
            return
        state = {
            "version": _CHECKPOINT_VERSION,
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "best_epoch": best_epoch,
            "best_score": best_score,
            "best_model": best_state,
            "history": [record.to_dict() for record in history],
            # The standardisation of the data the model was fitted on, which evaluation needs
            # (a method may fit on a part of the pool: AutoBalance's lower level).
            "normalization": {"mean": list(self.normalize.mean), "std": list(self.normalize.std)},
            "extra": self.extra_state(),
        }
        if self._recorder is not None:  # only then: without it the keys are those of before
            state["dynamics"] = self._recorder.state()
        atomic_write(path, lambda handle: torch.save(state, handle))

    def _load_checkpoint(self) -> dict[str, Any] | None:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return None
        checkpoint = load_checkpoint(path, map_location=self.device)
        if checkpoint.get("fingerprint", "") != self.fingerprint:
            raise AutorobustError(
                f"{path}: checkpoint was written by a different configuration; "
                "replace that run (--overwrite) or use another run_dir"
            )
        return checkpoint


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary unpickling).

    Raises:
        AutorobustError: one line naming ``path``: missing, unreadable, not a torch zip archive,
            corrupt or truncated, or holding objects a weights-only load refuses. The message is
            our own: torch's advice to retry with unsafe unpickling is never passed on.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            magic = stream.read(len(_ZIP_MAGIC))
    except FileNotFoundError:
        raise AutorobustError(f"{path}: no such checkpoint") from None
    except OSError as exc:
        raise AutorobustError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if magic != _ZIP_MAGIC:
        raise AutorobustError(
            f"{path}: not an autorobust checkpoint (not a torch zip archive: corrupt, or a file "
            "of another kind)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol of odd files
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _REFUSED_GLOBAL.search(str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise AutorobustError(
            f"{path}: not an autorobust checkpoint: it holds Python objects{what} other than "
            "tensors, numbers and plain containers, which are never unpickled"
        ) from None
    except Exception:  # torch raises several types for a corrupt or truncated archive
        raise AutorobustError(
            f"{path}: not a readable autorobust checkpoint (corrupt or truncated archive)"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("version") != _CHECKPOINT_VERSION:
        raise AutorobustError(f"{path}: not an autorobust checkpoint (version mismatch)")
    return checkpoint
