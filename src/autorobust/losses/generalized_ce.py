"""Generalized cross-entropy, robust to label noise."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from autorobust.losses.base import (
    ClassificationLoss,
    _check_float,
    _check_inputs,
    _target_log_prob,
)
from autorobust.losses.registry import register_loss

__all__ = ["GeneralizedCrossEntropyLoss"]


@register_loss("generalized_ce")
class GeneralizedCrossEntropyLoss(ClassificationLoss):
    """Zhang & Sabuncu (2018, "Generalized Cross Entropy Loss ...", Eq. 6): ℓ = (1 − p_y^q) / q.

    p = softmax(z). q → 0 recovers cross-entropy, q = 1 is the (noise-robust) mean absolute error
    1 − p_y (up to a factor 2).

    Hyper-parameters:
        q: q in (0, 1], default 0.7; searched in [0.1, 1] (linear).
    """

    search_space: ClassVar[dict[str, tuple[float, float, str]]] = {"q": (0.1, 1.0, "linear")}

    def __init__(self, *, q: float = 0.7) -> None:
        super().__init__()
        self.q = _check_float(q, "q", "generalized_ce", low=0.0, high=1.0, low_open=True)

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss float (B,) of logits float (B, K) and labels int64 (B,)."""
        _check_inputs(logits, target, None)
        # 1 − p^q = −expm1(q log p): exact for small q, where 1 − p^q would cancel.
        return -torch.expm1(self.q * _target_log_prob(logits, target)) / self.q
