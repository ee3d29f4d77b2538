"""AutoBalance's upper-level objectives and the fairness measures they target (Li et al. 2021).

The upper level minimises one of these on validation data: balanced cross-entropy, a smooth
worst-class loss, or balanced cross-entropy plus a soft equal-opportunity gap between groups
(Li et al., NeurIPS 2021, section 3). :func:`fairness_metrics` measures the hard versions on a
test split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from autorobust.errors import DataError

__all__ = ["equal_opportunity_gap", "fairness_metrics", "validation_objective"]


def validation_objective(
    logits: Tensor,
    labels: Tensor,
    *,
    kind: str,
    class_weights: Tensor,
    groups: Tensor | None = None,
    temperature: float = 0.5,
    fairness_weight: float = 1.0,
) -> Tensor:
    """The upper-level loss on plain logits z (B, K) and labels int64 (B,); a scalar.

    - ``balanced_ce``: Σ_i c_{y_i} CE_i / Σ_i c_{y_i}, c ∝ 1/n_c (``class_weights`` (K,));
    - ``worst_class``: T · log Σ_c exp(L_c / T) over the per-class mean CE L_c of present classes
      (a smooth max; T → 0 is the worst class);
    - ``fairness``: balanced CE + λ · soft equal-opportunity gap between the values of ``groups``
      (see :func:`equal_opportunity_gap`, with the soft error 1 − p_y).
    """
    ce = F.cross_entropy(logits, labels, reduction="none")
    if kind == "balanced_ce":
        weights = class_weights.to(logits)[labels]
        return (weights * ce).sum() / weights.sum()
    num_classes = logits.shape[1]
    if kind == "worst_class":
        sums = torch.zeros(num_classes, dtype=ce.dtype, device=ce.device).index_add(0, labels, ce)
        counts = torch.bincount(labels, minlength=num_classes)
        present = counts > 0
        per_class = sums[present] / counts[present].to(ce)
        return temperature * torch.logsumexp(per_class / temperature, dim=0)
    if kind == "fairness":
        weights = class_weights.to(logits)[labels]
        balanced = (weights * ce).sum() / weights.sum()
        if groups is None:
            raise DataError("bilevel.objective 'fairness' needs group attributes in the data")
        soft_error = 1.0 - torch.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
        return balanced + fairness_weight * equal_opportunity_gap(soft_error, labels, groups)
    raise ValueError(f"unknown validation objective {kind!r}")


def equal_opportunity_gap(errors: Tensor, labels: Tensor, groups: Tensor) -> Tensor:
    """Mean over classes of (max_a − min_a) of the group-wise mean error within the class.

    With 0/1 errors this is the equal-opportunity gap (difference of true-positive rates between
    groups, averaged over classes); with soft errors 1 − p_y it is its differentiable surrogate.
    Classes seen in fewer than two groups are skipped; no such class gives 0.
    """
    gaps = []
    for c in torch.unique(labels):
        in_class = labels == c
        rates = [errors[in_class & (groups == a)].mean() for a in torch.unique(groups[in_class])]
        if len(rates) >= 2:
            stacked = torch.stack(rates)
            gaps.append(stacked.max() - stacked.min())
    return torch.stack(gaps).mean() if gaps else errors.sum() * 0.0


def fairness_metrics(
    labels: np.ndarray, predictions: np.ndarray, groups: np.ndarray
) -> dict[str, Any]:
    """Equal-opportunity gap, worst-group accuracy and per-group accuracy (fractions in [0, 1]).

    Args:
        labels, predictions, groups: int (N,) true labels, predicted labels, group attributes.

    Returns:
        ``equal_opportunity_gap`` (mean over classes of the max − min recall across groups),
        ``worst_group_accuracy`` (minimum accuracy over the (group, class) cells present),
        ``group_accuracy`` {group: accuracy}.
    """
    labels, predictions, groups = (
        np.asarray(x, dtype=np.int64) for x in (labels, predictions, groups)
    )
    correct = labels == predictions
    gap = equal_opportunity_gap(
        torch.as_tensor(1.0 - correct, dtype=torch.float64),
        torch.as_tensor(labels),
        torch.as_tensor(groups),
    )
    cells = [
        correct[(labels == c) & (groups == a)].mean()
        for a in np.unique(groups)
        for c in np.unique(labels)
        if ((labels == c) & (groups == a)).any()
    ]
    return {
        "equal_opportunity_gap": float(gap),
        "worst_group_accuracy": float(min(cells)) if cells else None,
        "group_accuracy": {str(a): float(correct[groups == a].mean()) for a in np.unique(groups)},
    }
