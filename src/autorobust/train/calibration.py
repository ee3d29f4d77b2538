"""Temperature scaling (Guo et al., 2017) fitted on the clean meta set, and its before/after report.

A run's softmax outputs are often over- or under-confident; one scalar T > 0 rescales the logits,
``softmax(z / T)``, without changing any prediction (the arg max is the same). T is fitted by
minimising the *balanced* log-loss on the clean meta set (the mean over classes of the mean
cross-entropy of that class's images), so a class with many meta images weighs no more than one
with few. :func:`fit_temperature` is also what a design's calibrated meta score uses
(:mod:`autorobust.design.scoring`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autorobust.train.metrics import expected_calibration_error

__all__ = [
    "CALIBRATION_BINS",
    "TEMPERATURE_RANGE",
    "balanced_mean",
    "calibration_report",
    "fit_temperature",
    "per_image_log_loss",
    "softmax",
]

TEMPERATURE_RANGE = (0.05, 20.0)
"""The bounds of a fitted temperature (dimensionless)."""

CALIBRATION_BINS = 15
"""Equal-width confidence bins of the expected calibration error in ``metrics.json``."""


def per_image_log_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of each image, float64 (M,), from logits (M, K) and labels int (M,)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return log_norm - z[np.arange(len(z)), np.asarray(labels)]


def balanced_mean(values: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean over the classes present of the mean per-image value of that class (the balanced
    score of per-image losses (M,) or 0/1 errors; labels int (M,))."""
    labels = np.asarray(labels)
    values = np.asarray(values, dtype=np.float64)
    means = [values[labels == c].mean() for c in range(num_classes) if (labels == c).any()]
    return float(np.mean(means))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """The temperature T in [0.05, 20] minimising the balanced log-loss of ``logits / T``.

    Args:
        logits: float (M, K).
        labels: int (M,).
        num_classes: K.

    Returns:
        T (a bounded scalar minimisation over log T).
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)

    def loss(log_t: float) -> float:
        return balanced_mean(per_image_log_loss(z / np.exp(log_t), labels), labels, num_classes)

    low, high = np.log(TEMPERATURE_RANGE)
    result = minimize_scalar(loss, bounds=(low, high), method="bounded")
    return float(np.exp(result.x))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities float64 (N, K) of ``softmax(logits / temperature)``; logits float (N, K)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def calibration_report(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Fit the temperature on a clean labelled set and measure it there, before and after.

    Args:
        logits: float (M, K), the raw logits of the selected weights on the meta set.
        labels: int (M,), its clean labels.
        num_classes: K.

    Returns:
        ``metrics.json``'s ``calibration`` block: ``temperature`` (T, dimensionless),
        ``expected_calibration_error_before`` / ``_after`` (ECE with 15 equal-width bins, a
        fraction in [0, 1]), ``nll_before`` / ``nll_after`` (balanced log-loss in nats: the
        objective T minimises), ``num_bins`` and ``fitted_on`` ("meta").
    """
    labels = np.asarray(labels)
    temperature = fit_temperature(logits, labels, num_classes)
    report: dict[str, Any] = {"temperature": temperature, "fitted_on": "meta"}
    for when, t in (("before", 1.0), ("after", temperature)):
        z = np.asarray(logits, dtype=np.float64) / t
        report[f"expected_calibration_error_{when}"] = expected_calibration_error(
            softmax(z), labels, CALIBRATION_BINS
        )
        report[f"nll_{when}"] = balanced_mean(per_image_log_loss(z, labels), labels, num_classes)
    report["num_bins"] = CALIBRATION_BINS
    return report
