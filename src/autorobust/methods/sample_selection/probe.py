"""What a probe model trained on the noisy pool produced: the detectors' input.

The arrays are plain numpy, so that whatever trained the probe (a pipeline, a script, another
method through its files) can hand them over. :func:`collect_probe_outputs` computes them for a
:class:`~autorobust.models.Classifier`, :func:`run_probe_outputs` for a finished training run;
:func:`read_sample_weights` reads MW-Net's
``sample_weights.npz`` (written by ``method: reweight``) for the ``weights`` detector, and
:func:`run_probe_outputs` adds the training dynamics a probe run recorded
(``train.record_dynamics``, :mod:`autorobust.train.dynamics`) for the ``aum``, ``mean_loss`` and
``agreement`` detectors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from autorobust._io import read_npz
from autorobust.data.tensors import Normalization, images_to_tensor
from autorobust.errors import DataError
from autorobust.losses.base import ClassificationLoss
from autorobust.models.base import Classifier
from autorobust.train.dynamics import DYNAMICS_NAME, read_dynamics

if TYPE_CHECKING:
    from autorobust.config import ExperimentConfig
    from autorobust.data.splits import Splits

__all__ = ["ProbeOutputs", "collect_probe_outputs", "read_sample_weights", "run_probe_outputs"]


@dataclass(frozen=True)
class ProbeOutputs:
    """Per-sample outputs of a probe on the training pool (N samples) and the clean meta set (M).

    Only ``labels``, ``meta_labels`` and ``num_classes`` are required; each detector names the
    arrays it reads.

    Attributes:
        num_classes: K.
        labels: int64 (N,), the pool's observed labels.
        meta_labels: int64 (M,), the meta set's (clean) labels.
        logits: float (N, K), the probe's raw logits (for a logit-adjusted probe, the balanced
            posterior's logits).
        meta_logits: float (M, K).
        features: float (N, D), penultimate features (``Classifier.forward_features``).
        meta_features: float (M, D).
        losses: float (N,), per-sample training losses of the observed labels (e.g. the probe's
            logit-adjusted loss; MW-Net's recorded ``losses``).
        meta_losses: float (M,), the same loss of the meta images and their labels.
        weights: float (N,), MW-Net's per-sample weights of the last epoch.
        prediction_logits: float (N, K), the logits relabelling takes its predicted class and
            confidence from; None: ``logits``. A probe trained on noisy labels learns the noisy
            posterior, whose confidence the noise caps (40% symmetric noise: no pool sample
            reached 0.9 after 5 epochs on Fashion-MNIST), so these may come from a model trained
            on the kept samples, or be corrected by a noise model.
        margins: float (N, E), each sample's margin (logit of the observed label minus the
            largest other logit) in the training forward pass of each of E epochs (Pleiss et al.
            2020, AUM; ``dynamics.npz`` of a run with ``train.record_dynamics``).
        epoch_losses: float (N, E), its per-sample training loss at each epoch (the same file).
    """

    num_classes: int
    labels: np.ndarray
    meta_labels: np.ndarray
    logits: np.ndarray | None = None
    meta_logits: np.ndarray | None = None
    features: np.ndarray | None = None
    meta_features: np.ndarray | None = None
    losses: np.ndarray | None = None
    meta_losses: np.ndarray | None = None
    weights: np.ndarray | None = None
    prediction_logits: np.ndarray | None = None
    margins: np.ndarray | None = None
    epoch_losses: np.ndarray | None = None

    def __post_init__(self) -> None:
        k = self.num_classes
        n, m = len(self.labels), len(self.meta_labels)
        for name in ("labels", "meta_labels"):
            value = np.asarray(getattr(self, name))
            if value.ndim != 1 or value.dtype.kind not in "iu":
                raise ValueError(f"{name} must be a 1-D integer array, got {value.dtype}")
            if value.size and (value.min() < 0 or value.max() >= k):
                raise ValueError(f"{name} must lie in [0, {k}), found {value.min()}..{value.max()}")
            object.__setattr__(self, name, value.astype(np.int64))
        expected = {
            "logits": (n, k),
            "meta_logits": (m, k),
            "features": (n, None),
            "meta_features": (m, None),
            "losses": (n,),
            "meta_losses": (m,),
            "weights": (n,),
            "prediction_logits": (n, k),
            "margins": (n, None),
            "epoch_losses": (n, None),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float64)
            wrong = value.ndim != len(shape) or any(
                want is not None and got != want
                for got, want in zip(value.shape, shape, strict=True)
            )
            if wrong:
                raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
            bad = int((~np.isfinite(value)).sum())
            if bad:
                raise DataError(f"probe outputs: {name} holds {bad} non-finite values")
            object.__setattr__(self, name, value)
        margins, epoch_losses = self.margins, self.epoch_losses
        if margins is not None and epoch_losses is not None and margins.shape != epoch_losses.shape:
            raise ValueError(
                f"margins {margins.shape} and epoch_losses {epoch_losses.shape} must have the "
                "same shape"
            )

    def missing(self, names: tuple[str, ...]) -> list[str]:
        """Which of the attributes ``names`` are None."""
        return [name for name in names if getattr(self, name) is None]

    def with_weights(self, weights: np.ndarray) -> ProbeOutputs:
        """A copy with MW-Net's ``weights`` (N,) added."""
        return replace(self, weights=weights)


@torch.no_grad()
def _logits_and_features(
    model: Classifier,
    images: np.ndarray,
    normalize: Normalization,
    device: torch.device,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    was_training = model.training
    model.eval()
    logits, features = [], []
    try:
        for i in range(0, len(images), batch_size):
            x = normalize(images_to_tensor(images[i : i + batch_size], device))
            f = model.forward_features(x)
            logits.append(model.forward_head(f).double().cpu())
            features.append(f.double().cpu())
    finally:
        model.train(was_training)
    k = int(model.num_classes)
    if not logits:
        return np.zeros((0, k)), np.zeros((0, int(model.feature_dim)))
    return torch.cat(logits).numpy(), torch.cat(features).numpy()


def collect_probe_outputs(
    model: Classifier,
    pool_images: np.ndarray,
    pool_labels: np.ndarray,
    meta_images: np.ndarray,
    meta_labels: np.ndarray,
    *,
    normalize: Normalization,
    device: torch.device | str = "cpu",
    loss: ClassificationLoss | None = None,
    batch_size: int = 512,
) -> ProbeOutputs:
    """Logits, penultimate features and (with ``loss``) per-sample losses of a trained probe.

    Args:
        model: the probe (eval mode is used; its mode is restored).
        pool_images: uint8 (N, H, W, C), the training pool; ``pool_labels`` int64 (N,) observed.
        meta_images: uint8 (M, H, W, C), the clean meta set; ``meta_labels`` int64 (M,).
        normalize: the standardisation the probe was trained with
            (``Normalization.from_images`` of its training images).
        device: where the probe runs.
        loss: the probe's training loss; its per-sample values fill ``losses``/``meta_losses``
            (e.g. logit-adjusted, for the ``small_loss`` detector). None: no losses.
        batch_size: images per forward pass.

    Returns:
        :class:`ProbeOutputs` with float64 arrays.
    """
    device = torch.device(device)
    logits, features = _logits_and_features(model, pool_images, normalize, device, batch_size)
    meta_logits, meta_features = _logits_and_features(
        model, meta_images, normalize, device, batch_size
    )
    losses = meta_losses = None
    if loss is not None:
        with torch.no_grad():
            losses = _per_sample(loss, logits, pool_labels)
            meta_losses = _per_sample(loss, meta_logits, meta_labels)
    return ProbeOutputs(
        num_classes=int(model.num_classes),
        labels=np.asarray(pool_labels),
        meta_labels=np.asarray(meta_labels),
        logits=logits,
        meta_logits=meta_logits,
        features=features,
        meta_features=meta_features,
        losses=losses,
        meta_losses=meta_losses,
    )


def run_probe_outputs(
    config: ExperimentConfig, splits: Splits, *, device: torch.device | str = "cpu"
) -> ProbeOutputs:
    """:func:`collect_probe_outputs` of the finished run in ``config.run_dir`` (the probe).

    The run's selected weights and the standardisation it was trained with are read from its
    checkpoint; its configured loss gives the per-sample losses. When the run recorded its
    training dynamics (``train.record_dynamics``: ``dynamics.npz`` in its run_dir), they fill
    ``margins`` and ``epoch_losses`` (N, E).

    Args:
        config: the probe run's config.
        splits: its splits (``splits.train`` is the pool scored, ``splits.meta`` the meta set).
        device: where the probe runs.

    Raises:
        AutorobustError: no readable checkpoint, or one written by another configuration.
        DataError: a ``dynamics.npz`` that is corrupt or of another pool (one line naming it).
    """
    from autorobust.experiment import build_loss, load_best_model  # a layer below, heavy

    model, normalize, _ = load_best_model(config, splits, device=device)
    outputs = collect_probe_outputs(
        model,
        splits.train.images,
        splits.train.labels,
        splits.meta.images,
        splits.meta.labels,
        normalize=normalize,
        device=device,
        loss=build_loss(config, splits).to(device),
    )
    path = Path(config.run_dir) / DYNAMICS_NAME
    if not path.exists():
        return outputs
    dynamics = read_dynamics(path, splits.train.labels)
    return replace(outputs, margins=dynamics.margins, epoch_losses=dynamics.losses)


def _per_sample(loss: ClassificationLoss, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    device = next((b.device for b in loss.buffers()), torch.device("cpu"))
    values = loss.per_sample(
        torch.as_tensor(logits, dtype=torch.float32, device=device),
        torch.as_tensor(labels, dtype=torch.int64, device=device),
    )
    return values.double().cpu().numpy()


def read_sample_weights(path: str | Path, labels: np.ndarray) -> np.ndarray:
    """MW-Net's last-epoch weights float64 (N,) from ``sample_weights.npz`` (``method: reweight``).

    The file has no positions of its samples, so it is matched to the pool by its length and its
    ``labels`` array, which must equal the pool's observed ``labels`` (N,).

    Raises:
        DataError: one line naming ``path``: missing, not an ``.npz`` archive (never unpickled),
            no ``weights`` array, a length or labels that differ from the pool's (a file of
            another run), or a weight that is not finite (a sample not recorded).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: sample weights file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None

    def select(names: list[str]) -> list[str]:
        if "weights" not in names:
            raise DataError(f"{path}: no 'weights' array (not a sample_weights.npz)")
        return [name for name in ("weights", "labels") if name in names]

    arrays = read_npz(path, data, select=select)
    weights, file_labels = arrays["weights"], arrays.get("labels")
    labels = np.asarray(labels)
    if weights.ndim != 1 or weights.dtype.kind != "f" or len(weights) != len(labels):
        raise DataError(
            f"{path}: weights must be float ({len(labels)},) for this pool, got {weights.dtype} "
            f"{weights.shape} (written for another run?)"
        )
    if file_labels is not None and not np.array_equal(file_labels, labels):
        raise DataError(f"{path}: its labels differ from this pool's (written for another run)")
    bad = int((~np.isfinite(weights)).sum())
    if bad:
        raise DataError(f"{path}: {bad} weights are not finite (samples not recorded)")
    return weights.astype(np.float64)
