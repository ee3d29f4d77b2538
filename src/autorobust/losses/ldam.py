"""Label-distribution-aware margin loss with deferred re-weighting (LDAM-DRW)."""

from __future__ import annotations

import math
import numbers
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
from autorobust.losses.registry import register_loss

__all__ = ["LDAMLoss"]

# Cao et al.'s schedule: 200 epochs with re-weighting from epoch 160.
_DEFAULT_DRW_FRACTION = 0.8


@register_loss("ldam")
class LDAMLoss(ClassificationLoss):
    """Cao et al. (2019, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss").

    Eq. 13: ℓ(z, y) = −log [ e^{s(z_y − Δ_y)} / (e^{s(z_y − Δ_y)} + Σ_{k≠y} e^{s z_k}) ], margins
    Δ_c = C / n_c^{1/4} (Eq. 12), C chosen so the largest margin (rarest class) is ``max_margin``.
    DRW (Algorithm 1): from epoch ``drw_epoch`` on, each sample's loss is multiplied by the Cui et
    al. class-balanced weight w_y = (1 − β)/(1 − β^{n_y}), normalised to Σ w = K; before it the loss
    is unweighted. :meth:`on_epoch_start` switches the weights on; the batch mean of w_y ℓ is
    returned (see :mod:`autorobust.losses.base`).

    Cao et al.'s code applies the loss to cosine logits from a ``NormedLinear`` head (features and
    class weights L2-normalised, z_k ∈ [−1, 1]), which is what makes s = 30 a sensible scale. Our
    models have plain linear heads, so the margin and the scale apply to the raw logits, and the
    default scale is 1: s = 30 on raw logits saturates the softmax at initialisation (measured:
    Fashion-MNIST long tail, small_cnn, 10% balanced accuracy after one epoch, i.e. chance).

    Hyper-parameters:
        max_margin: largest margin C / min_c n_c^{1/4} > 0, default 0.5; searched in [0.1, 1].
        scale: s > 0, default 1.0 (raw logits); searched in [1, 30] (log).
        drw: whether to use deferred re-weighting, default True.
        drw_epoch: first (0-based) epoch with re-weighting; default None = ⌊0.8 · num_epochs⌋.
        drw_beta: β of the DRW weights in [0, 1), default 0.9999.
    """

    uses_class_counts: ClassVar[bool] = True
    search_space: ClassVar[dict[str, tuple[float, float, str]]] = {
        "max_margin": (0.1, 1.0, "linear"),
        "scale": (1.0, 30.0, "log"),
    }
    # buffers (registered in __init__), typed for mypy
    margins: Tensor
    drw_weights: Tensor

    def __init__(
        self,
        *,
        class_counts: Sequence[int] | np.ndarray | None,
        max_margin: float = 0.5,
        scale: float = 1.0,
        drw: bool = True,
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
    ) -> None:
        super().__init__()
        counts = _check_counts(class_counts, "ldam", positive=True)
        self.max_margin = _check_float(max_margin, "max_margin", "ldam", low=0.0, low_open=True)
        self.scale = _check_float(scale, "scale", "ldam", low=0.0, low_open=True)
        if not isinstance(drw, bool):
            raise ConfigError(f"loss 'ldam': drw must be true or false, got {drw!r}")
        self.drw = drw
        if drw_epoch is not None and (
            isinstance(drw_epoch, bool)
            or not isinstance(drw_epoch, numbers.Integral)
            or drw_epoch < 0
        ):
            raise ConfigError(
                f"loss 'ldam': drw_epoch must be None or an integer >= 0, got {drw_epoch!r}"
            )
        self.drw_epoch = None if drw_epoch is None else int(drw_epoch)
        self.drw_beta = _check_float(
            drw_beta, "drw_beta", "ldam", low=0.0, high=1.0, high_open=True
        )
        self.num_classes = len(counts)
        margins = 1.0 / np.power(counts.astype(np.float64), 0.25)
        margins *= self.max_margin / margins.max()
        self.register_buffer("margins", torch.as_tensor(margins, dtype=torch.float32))
        self.register_buffer(
            "drw_weights",
            torch.as_tensor(class_balanced_weights(counts, self.drw_beta), dtype=torch.float32),
        )
        self.reweighting = False

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Switch the DRW class weights on from the re-weighting epoch (``epoch`` is 0-based)."""
        if not self.drw:
            return
        start = self.drw_epoch
        if start is None:
            start = math.floor(_DEFAULT_DRW_FRACTION * num_epochs)
        self.reweighting = epoch >= start

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss float (B,) of logits float (B, K) and labels int64 (B,), DRW included."""
        _check_inputs(logits, target, self.num_classes)
        margins = self.margins.to(logits)[target]
        shifted = logits - F.one_hot(target, self.num_classes).to(logits) * margins[:, None]
        loss = F.cross_entropy(self.scale * shifted, target, reduction="none")
        if self.reweighting:
            loss = self.drw_weights.to(logits)[target] * loss
        return loss
