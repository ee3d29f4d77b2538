"""Class-balanced loss based on the effective number of samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from autorobust.errors import ConfigError
from autorobust.losses.base import (
    ClassificationLoss,
    _check_counts,
    _check_float,
    _check_inputs,
    class_balanced_weights,
)
from autorobust.losses.focal import focal_per_sample
from autorobust.losses.registry import register_loss

__all__ = ["ClassBalancedLoss"]

_BASES = ("ce", "focal")


@register_loss("class_balanced")
class ClassBalancedLoss(ClassificationLoss):
    """Cui et al. (2019, "Class-Balanced Loss Based on Effective Number of Samples", Eq. 5–6).

    ℓ(z, y) = w_y · ℓ_base(z, y), with w_c = (1 − β) / (1 − β^{n_c}) normalised so Σ_c w_c = K,
    ℓ_base softmax cross-entropy or softmax focal loss. β = 0 is the base loss, β → 1 weights by
    inverse class frequency. The batch mean of w_y · ℓ_base is returned (Cui et al.'s convention),
    not torch's Σ w_y ℓ / Σ w_y. Cui et al.'s focal variant uses sigmoid outputs; ours is softmax.

    Hyper-parameters:
        beta: β in [0, 1), default 0.9999; searched in [0.9, 0.9999] (linear — the paper's grid is
            {0.9, 0.99, 0.999, 0.9999}).
        base: "ce" (default) or "focal".
        gamma: γ >= 0 of the focal base, default 2.0 (ignored with base "ce").
    """

    uses_class_counts: ClassVar[bool] = True
    search_space: ClassVar[dict[str, tuple[float, float, str]]] = {"beta": (0.9, 0.9999, "linear")}
    class_weights: Tensor  # a buffer (registered in __init__), typed for mypy

    def __init__(
        self,
        *,
        class_counts: Sequence[int] | np.ndarray | None,
        beta: float = 0.9999,
        base: str = "ce",
        gamma: float = 2.0,
    ) -> None:
        super().__init__()
        counts = _check_counts(class_counts, "class_balanced", positive=True)
        self.beta = _check_float(beta, "beta", "class_balanced", low=0.0, high=1.0, high_open=True)
        if base not in _BASES:
            raise ConfigError(f"loss 'class_balanced': base must be one of {_BASES}, got {base!r}")
        self.base = base
        self.gamma = _check_float(gamma, "gamma", "class_balanced", low=0.0)
        self.num_classes = len(counts)
        self.register_buffer(
            "class_weights",
            torch.as_tensor(class_balanced_weights(counts, self.beta), dtype=torch.float32),
        )

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss float (B,) of logits float (B, K) and labels int64 (B,), w_y included."""
        _check_inputs(logits, target, self.num_classes)
        if self.base == "focal":
            loss = focal_per_sample(logits, target, self.gamma)
        else:
            loss = F.cross_entropy(logits, target, reduction="none")
        return self.class_weights.to(logits)[target] * loss
