"""Logit-adjusted cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from autorobust.losses.base import ClassificationLoss, _check_counts, _check_float, _check_inputs
from autorobust.losses.registry import register_loss

__all__ = ["LogitAdjustedLoss"]


@register_loss("logit_adjustment")
class LogitAdjustedLoss(ClassificationLoss):
    """Menon et al. (2021, "Long-tail learning via logit adjustment", Eq. 10).

    ℓ(z, y) = −log [ exp(z_y + τ log π_y) / Σ_k exp(z_k + τ log π_k) ], π_c = n_c / Σ_k n_k,
    i.e. cross-entropy on the logits z + τ log π. Predict with the plain logits z. τ = 0 is CE.

    Hyper-parameters:
        tau: τ >= 0, default 1.0; searched in [0, 3] (linear).
    """

    uses_class_counts: ClassVar[bool] = True
    search_space: ClassVar[dict[str, tuple[float, float, str]]] = {"tau": (0.0, 3.0, "linear")}
    log_prior: Tensor  # a buffer (registered in __init__), typed for mypy

    def __init__(
        self, *, class_counts: Sequence[int] | np.ndarray | None, tau: float = 1.0
    ) -> None:
        super().__init__()
        counts = _check_counts(class_counts, "logit_adjustment", positive=True)
        self.tau = _check_float(tau, "tau", "logit_adjustment", low=0.0)
        self.num_classes = len(counts)
        log_prior = np.log(counts.astype(np.float64) / counts.sum())
        self.register_buffer("log_prior", torch.as_tensor(log_prior, dtype=torch.float32))

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss float (B,) of logits float (B, K) and labels int64 (B,)."""
        _check_inputs(logits, target, self.num_classes)
        adjusted = logits + self.tau * self.log_prior.to(logits)
        return F.cross_entropy(adjusted, target, reduction="none")
