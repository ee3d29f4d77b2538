"""Focal loss (softmax form)."""

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

__all__ = ["FocalLoss", "focal_per_sample"]


@register_loss("focal")
class FocalLoss(ClassificationLoss):
    """Lin et al. (2017, "Focal Loss for Dense Object Detection", Eq. 4): ℓ = −(1 − p_y)^γ log p_y.

    p = softmax(z) over the K classes (the paper states it for the binary/sigmoid case; the softmax
    form is the usual multi-class one). γ = 0 is cross-entropy.

    Hyper-parameters:
        gamma: γ >= 0, default 2.0; searched in [0, 5] (linear).
    """

    search_space: ClassVar[dict[str, tuple[float, float, str]]] = {"gamma": (0.0, 5.0, "linear")}

    def __init__(self, *, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = _check_float(gamma, "gamma", "focal", low=0.0)

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss float (B,) of logits float (B, K) and labels int64 (B,)."""
        _check_inputs(logits, target, None)
        return focal_per_sample(logits, target, self.gamma)


def focal_per_sample(logits: Tensor, target: Tensor, gamma: float) -> Tensor:
    """−(1 − p_y)^γ log p_y, float (B,); shared with the class-balanced focal loss."""
    log_p = _target_log_prob(logits, target)
    if gamma == 0.0:
        return -log_p
    # 1 − p_y via expm1 keeps precision when p_y is near 1; the floor keeps the gradient of
    # (1 − p)^γ finite for γ < 1 when p_y rounds to exactly 1.
    one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
    return -(one_minus_p**gamma) * log_p
