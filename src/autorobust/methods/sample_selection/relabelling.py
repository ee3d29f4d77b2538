"""Relabelling: which rejected samples get the probe's predicted class, and with what weight."""

from __future__ import annotations

import numpy as np

from autorobust.methods.sample_selection.detectors import log_softmax

__all__ = ["confident_predictions", "relabel_mask"]


def confident_predictions(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The probe's predicted class int64 (N,) (argmax of the raw logits (N, K): for a
    logit-adjusted probe, the balanced prediction) and its softmax confidence float64 (N,)."""
    log_p = log_softmax(logits)
    predicted = log_p.argmax(1).astype(np.int64)
    return predicted, np.exp(log_p[np.arange(len(predicted)), predicted])


def relabel_mask(
    *,
    rejected: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    min_confidence: float,
    candidate_scores: np.ndarray | None,
    thresholds: np.ndarray,
    prototype_labels: np.ndarray | None = None,
) -> np.ndarray:
    """Which samples take their predicted class, bool (N,): the sample was rejected, the
    prediction differs from its observed label, its confidence is >= ``min_confidence``, its
    detector score for the predicted class reaches that class's threshold (when the detector
    scores candidate labels; otherwise the confidence decides alone) and, when
    ``prototype_labels`` are given, the nearest clean prototype agrees (RoLT's label guess).

    Args:
        rejected: bool (N,), samples the selection rule did not keep.
        labels: int64 (N,), observed labels.
        predicted: int64 (N,), the probe's predicted classes; ``confidence`` float (N,) theirs.
        min_confidence: in (0, 1].
        candidate_scores: float (N,), the detector's score of each sample for its predicted class,
            or None.
        thresholds: float (K,), each class's threshold from the selection rule.
        prototype_labels: int64 (N,), the nearest prototype's class, or None.
    """
    mask = rejected & (predicted != labels) & (confidence >= min_confidence)
    if candidate_scores is not None:
        mask &= candidate_scores >= thresholds[predicted]
    if prototype_labels is not None:
        mask &= prototype_labels == predicted
    return mask
