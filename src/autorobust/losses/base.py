"""The classification-loss interface and shared validation of class counts and hyper-parameters.

Reduction convention: every loss returns per-sample values ``per_sample(logits, target)`` of shape
(B,) that already include any class weight, and ``forward`` is their plain mean over the batch. For
weighted losses this differs from ``torch.nn.functional.cross_entropy(weight=...)``, which divides
by the sum of the batch's weights; we follow Cui et al. (2019), who normalise the class weights to
sum to K and average over the batch, so a weighted loss stays on the scale of plain CE.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from autorobust.errors import ConfigError

__all__ = ["ClassificationLoss", "class_balanced_weights"]


class ClassificationLoss(nn.Module):
    """Base class of the losses on logits (B, K) and integer labels (B,).

    Subclasses implement :meth:`per_sample` and set two class attributes:

    - ``uses_class_counts``: whether the constructor takes ``class_counts`` (the number of training
      samples per class, counted on the observed, possibly noisy, labels);
    - ``search_space``: hyper-parameter -> (low, high, scale), scale one of "linear", "log", "int";
      a search turns each entry into a ``trial.suggest_*`` call. Empty when nothing is tuned.

    Constructors take keyword-only hyper-parameters, validate them and store them; the loss name is
    set by :func:`autorobust.losses.register_loss`.
    """

    name: ClassVar[str] = ""
    uses_class_counts: ClassVar[bool] = False
    search_space: ClassVar[dict[str, tuple[float, float, str]]] = {}

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss float (B,) of logits float (B, K) and labels int64 (B,), with weights."""
        raise NotImplementedError

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean over the batch of :meth:`per_sample` (a scalar); see the module docstring."""
        return self.per_sample(logits, target).mean()

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Hook called by the trainer before epoch ``epoch`` (0-based) of ``num_epochs``; no-op."""

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's hyper-parameters (all but ``class_counts``) and their values."""
        names = [
            p.name
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "class_counts"
        ]
        return {name: getattr(self, name) for name in names}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())


def class_balanced_weights(counts: np.ndarray, beta: float) -> np.ndarray:
    """Cui et al. (2019, Eq. 3–4) class weights (1 − β) / (1 − β^{n_c}), normalised to sum to K.

    Args:
        counts: int64 (K,) samples per class, all >= 1 (checked by the caller).
        beta: β in [0, 1); β = 0 gives equal weights, β → 1 inverse class frequency.

    Returns:
        float64 (K,) weights with sum K.
    """
    effective_number = 1.0 - np.power(beta, counts.astype(np.float64))
    weights = (1.0 - beta) / effective_number
    return weights * (len(counts) / weights.sum())


def _loss_error(loss: str, message: str) -> ConfigError:
    return ConfigError(f"loss {loss!r}: {message}")


def _check_counts(
    class_counts: Sequence[int] | np.ndarray | None, loss: str, *, positive: bool
) -> np.ndarray:
    """``class_counts`` as int64 (K,): K >= 2 integers >= 0, or >= 1 if ``positive``."""
    if class_counts is None:
        raise _loss_error(loss, "class_counts is required (samples per class), got None")
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or counts.size < 2:
        raise _loss_error(
            loss, f"class_counts must be a 1-D sequence of >= 2 counts, got shape {counts.shape}"
        )
    if counts.dtype.kind not in "iuf" or (
        counts.dtype.kind == "f" and not np.all(np.isfinite(counts) & (counts == np.round(counts)))
    ):
        raise _loss_error(loss, f"class_counts must be integers, got {counts.tolist()}")
    counts = counts.astype(np.int64)
    if counts.min() < 0:
        raise _loss_error(loss, f"class_counts must be >= 0, got {counts.tolist()}")
    if positive and counts.min() == 0:
        empty = np.flatnonzero(counts == 0).tolist()
        raise _loss_error(
            loss,
            f"class_counts must be >= 1 for every class (the loss uses log n_c or 1/n_c), "
            f"classes {empty} have 0 samples",
        )
    return counts


def _check_float(
    value: object,
    name: str,
    loss: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float after checking it is a finite real number in the given interval."""
    lo = "(" if low_open or low is None else "["
    hi = ")" if high_open or high is None else "]"
    interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _loss_error(loss, f"{name} must be a number in {interval}, got {value!r}")
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        raise _loss_error(loss, f"{name} must be in {interval}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise _loss_error(loss, f"{name} must be in {interval}, got {value!r}")
    return value


def _check_inputs(logits: Tensor, target: Tensor, num_classes: int | None) -> None:
    """Shape checks shared by the losses (programming errors, hence ValueError)."""
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"logits must be (B, K) and target (B,), got {tuple(logits.shape)} and "
            f"{tuple(target.shape)}"
        )
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(
            f"logits have {logits.shape[1]} classes but class_counts has {num_classes}"
        )


def _target_log_prob(logits: Tensor, target: Tensor) -> Tensor:
    """log softmax(logits)_y, float (B,)."""
    return torch.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
