"""Cross-entropy with optional label smoothing."""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from autorobust.losses.base import ClassificationLoss, _check_float, _check_inputs
from autorobust.losses.registry import register_loss

__all__ = ["CrossEntropyLoss"]


@register_loss("cross_entropy")
class CrossEntropyLoss(ClassificationLoss):
    """ℓ(z, y) = (1 − ε)·(−log p_y) + (ε / K)·Σ_k (−log p_k), p = softmax(z).

    Label smoothing as in Szegedy et al. (2016, "Rethinking the Inception Architecture", §7);
    ε = 0 is plain cross-entropy.

    Hyper-parameters:
        label_smoothing: ε in [0, 1), default 0.0 (not searched).
    """

    search_space: ClassVar[dict[str, tuple[float, float, str]]] = {}

    def __init__(self, *, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = _check_float(
            label_smoothing, "label_smoothing", "cross_entropy", low=0.0, high=1.0, high_open=True
        )

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss float (B,) of logits float (B, K) and labels int64 (B,)."""
        _check_inputs(logits, target, None)
        return F.cross_entropy(
            logits, target, reduction="none", label_smoothing=self.label_smoothing
        )
