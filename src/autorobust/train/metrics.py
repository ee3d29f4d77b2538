"""Classification metrics for imbalanced and noisy data, as JSON-serialisable dicts.

All metrics are computed from integer predictions against the *clean* labels of an evaluation split
(the test split is clean; the meta split is clean by construction).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "FEW_SHOT_MAX",
    "MANY_SHOT_MIN",
    "classification_metrics",
    "confusion_matrix",
    "expected_calibration_error",
    "per_class_accuracy",
    "roc_auc",
    "shot_groups",
]

# Shot groups as in Liu et al. (OLTR, 2019) and the long-tail literature: many-shot classes have
# more than 100 training samples, few-shot fewer than 20, medium-shot the rest.
MANY_SHOT_MIN = 100
FEW_SHOT_MAX = 20


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (K, K) int64: row = true class, column = predicted class."""
    index = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class (K,) float64; NaN for a class absent from the evaluation split."""
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)


def shot_groups(train_class_counts: np.ndarray) -> dict[str, np.ndarray]:
    """Class indices of the many- (>100), medium- (20..100) and few-shot (<20) groups."""
    counts = np.asarray(train_class_counts)
    return {
        "many": np.flatnonzero(counts > MANY_SHOT_MIN),
        "medium": np.flatnonzero((counts >= FEW_SHOT_MAX) & (counts <= MANY_SHOT_MIN)),
        "few": np.flatnonzero(counts < FEW_SHOT_MAX),
    }


def expected_calibration_error(
    probabilities: np.ndarray, y_true: np.ndarray, num_bins: int = 15
) -> float:
    """ECE (Guo et al. 2017) with ``num_bins`` equal-width confidence bins; probabilities (N, K)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    bins = np.minimum((confidence * num_bins).astype(np.int64), num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def _mean_or_none(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
    *,
    probabilities: np.ndarray | None = None,
    train_class_counts: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class accuracy, macro-F1, worst-class accuracy, shot groups.

    Args:
        y_true: (N,) int true (clean) labels.
        y_pred: (N,) int predicted labels.
        num_classes: K.
        probabilities: optional (N, K) softmax outputs, for the expected calibration error.
        train_class_counts: optional (K,) training samples per class, for many/medium/few-shot
            accuracy (a group without classes is reported as null).

    Returns:
        A JSON-serialisable dict; accuracies are fractions in [0, 1]. Balanced and worst-class
        accuracy ignore classes absent from ``y_true``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    confusion = confusion_matrix(y_true, y_pred, num_classes)
    recall = per_class_accuracy(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    tp = np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall0 = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        f1 = np.where(precision + recall0 > 0, 2 * precision * recall0 / (precision + recall0), 0.0)
    present = support > 0
    metrics: dict[str, Any] = {
        "num_samples": len(y_true),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "balanced_accuracy": _mean_or_none(recall),
        "worst_class_accuracy": float(np.nanmin(recall)) if present.any() else None,
        "macro_f1": float(f1[present].mean()) if present.any() else None,
        "per_class_accuracy": [None if np.isnan(r) else float(r) for r in recall],
        "confusion_matrix": confusion.tolist(),
    }
    if probabilities is not None:
        metrics["expected_calibration_error"] = expected_calibration_error(probabilities, y_true)
    if train_class_counts is not None:
        for group, classes in shot_groups(train_class_counts).items():
            metrics[f"{group}_shot_accuracy"] = _mean_or_none(recall[classes])
    return metrics


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for boolean labels ``positive`` (N,), ties averaged.

    Mann–Whitney form: AUC = (Σ ranks of positives − P(P+1)/2) / (P·N); NaN if a class is empty.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average ranks over runs of tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
