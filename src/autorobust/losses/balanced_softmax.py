"""Balanced softmax cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from autorobust.losses.base import ClassificationLoss, _check_counts, _check_inputs
from autorobust.losses.registry import register_loss

__all__ = ["BalancedSoftmaxLoss"]


@register_loss("balanced_softmax")
class BalancedSoftmaxLoss(ClassificationLoss):
    """Ren et al. (2020, "Balanced Meta-Softmax for Long-Tailed Visual Recognition", Eq. 4).

    ℓ(z, y) = −log [ n_y exp(z_y) / Σ_k n_k exp(z_k) ], i.e. cross-entropy on z + log n. The
    constant log Σ n cancels, so it equals logit adjustment with τ = 1; it is kept as its own named
    baseline. No hyper-parameters.
    """

    uses_class_counts: ClassVar[bool] = True
    search_space: ClassVar[dict[str, tuple[float, float, str]]] = {}
    log_counts: Tensor  # a buffer (registered in __init__), typed for mypy

    def __init__(self, *, class_counts: Sequence[int] | np.ndarray | None) -> None:
        super().__init__()
        counts = _check_counts(class_counts, "balanced_softmax", positive=True)
        self.num_classes = len(counts)
        self.register_buffer("log_counts", torch.as_tensor(np.log(counts), dtype=torch.float32))

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss float (B,) of logits float (B, K) and labels int64 (B,)."""
        _check_inputs(logits, target, self.num_classes)
        return F.cross_entropy(logits + self.log_counts.to(logits), target, reduction="none")
