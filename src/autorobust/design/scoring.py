"""Scores of a design on the clean meta set, their standard errors, and the one-SE choice.

A meta set of 10 images per class is small: balanced accuracy on 100 images moves in steps of one
point per image and by several points between two trainings that differ only in their seed. The
design is therefore scored by the *balanced meta log-loss*, the mean over classes of the mean
cross-entropy of that class's meta images (smooth in the model's outputs), and every comparison
with the best design comes with the standard error of the paired difference over the meta images,
stratified by class. Following the one-standard-error rule (Breiman et al., 1984), the study
keeps the simplest design whose score is within one standard error of the best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ScoredDesign",
    "balanced_log_loss",
    "choose_within_one_standard_error",
    "per_image_log_loss",
    "weighted_difference",
]


def per_image_log_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of each image, float64 (M,), from logits (M, K) and labels int (M,)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return log_norm - z[np.arange(len(z)), np.asarray(labels)]


def balanced_log_loss(losses: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean over the classes present of the mean per-image loss of that class (nats)."""
    labels = np.asarray(labels)
    means = [losses[labels == c].mean() for c in range(num_classes) if (labels == c).any()]
    return float(np.mean(means))


def weighted_difference(
    losses_a: np.ndarray, losses_b: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[float, float]:
    """Balanced score of a minus that of b, and its standard error, over the same meta images.

    The balanced score is Σ_c (1/C) mean_{i ∈ c} ℓ_i over the C classes present; for the paired
    differences d_i = ℓ^a_i − ℓ^b_i its variance is Σ_c s_c² / (C² n_c), s_c² the sample variance
    of d within class c (sampling the meta images of each class anew).

    Returns:
        (difference, standard error), both in nats.
    """
    labels = np.asarray(labels)
    d = np.asarray(losses_a, dtype=np.float64) - np.asarray(losses_b, dtype=np.float64)
    present = [c for c in range(num_classes) if (labels == c).any()]
    classes = len(present)
    mean = sum(d[labels == c].mean() for c in present) / classes
    variance = 0.0
    for c in present:
        dc = d[labels == c]
        if len(dc) > 1:
            variance += dc.var(ddof=1) / (classes**2 * len(dc))
    return float(mean), float(np.sqrt(variance))


@dataclass(frozen=True)
class ScoredDesign:
    """A finished trial: its key, simplicity order and per-image meta losses (lower is better)."""

    key: int
    complexity: tuple[int, float]
    losses: np.ndarray


def choose_within_one_standard_error(
    designs: Sequence[ScoredDesign], labels: np.ndarray, num_classes: int
) -> tuple[int, int, list[dict[str, float]]]:
    """The best design, and the simplest one within one standard error of it.

    Args:
        designs: the scored designs (at least one).
        labels: int (M,), the meta images' labels, in the order of every ``losses``.
        num_classes: K.

    Returns:
        (key of the best, key of the chosen, one row per design: ``key``, ``score``,
        ``difference`` to the best and its ``standard_error``).
    """
    if not designs:
        raise ValueError("no design to choose from")
    scores = {d.key: balanced_log_loss(d.losses, labels, num_classes) for d in designs}
    best = min(designs, key=lambda d: (scores[d.key], d.complexity))
    rows, candidates = [], []
    for design in designs:
        diff, se = weighted_difference(design.losses, best.losses, labels, num_classes)
        rows.append(
            {
                "key": design.key,
                "score": scores[design.key],
                "difference": diff,
                "standard_error": se,
            }
        )
        if diff <= se:
            candidates.append(design)
    chosen = min(candidates, key=lambda d: (d.complexity, scores[d.key]))
    return best.key, chosen.key, rows
