"""Scores of a design on the clean meta set, their standard errors, and the one-SE choice.

A meta set of 10 images per class is small: balanced accuracy on 100 images moves in steps of one
point per image and by several points between two trainings that differ only in their seed. The
design is therefore scored by the *balanced meta log-loss*, the mean over classes of the mean
cross-entropy of that class's meta images (smooth in the model's outputs), and every comparison
with the best design comes with the standard error of the paired difference over the meta images,
stratified by class. Following the one-standard-error rule (Breiman et al., 1984), the study
keeps the simplest design whose score is within one standard error of the best.

The raw log-loss also rewards confidence: measured on Fashion-MNIST (rho = 100, 40% symmetric
noise, 1,500 images in the largest class, 10 epochs), a design trained on a cleaner selection had
the lower meta log-loss (1.273 against 1.484 nats) while logit adjustment on the whole noisy pool
was better on the test split (59.9% against 56.6% balanced); the noisy-label model is merely
under-confident (its best temperature is 0.43). The default score therefore first rescales each
design's logits by a temperature fitted on the *other* meta images (stratified folds, so no image
scores itself): the *calibrated* balanced log-loss (1.273 against 1.230 there, agreeing with the
test split). ``error`` scores the 0/1 balanced meta error instead (unbiased, but coarse).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autorobust.design.config import MetaScore

# Moved to the train layer, where every run fits its temperature; re-exported here unchanged.
from autorobust.train.calibration import balanced_mean, fit_temperature, per_image_log_loss

__all__ = [
    "ENSEMBLE_KEY",
    "SCORE_LABELS",
    "FinalistChoice",
    "MetaScore",
    "ScoredDesign",
    "balanced_mean",
    "calibrated_log_loss",
    "choose_finalist",
    "choose_within_one_standard_error",
    "fit_temperature",
    "per_image_log_loss",
    "per_image_score",
    "scored_balanced_mean",
    "stratified_folds",
    "weighted_difference",
]

SCORE_LABELS: dict[str, str] = {
    "calibrated_log_loss": "calibrated balanced meta log-loss",
    "log_loss": "balanced meta log-loss",
    "error": "balanced meta error",
}
"""What each score is called in reports (lower is better for all three)."""


def stratified_folds(labels: np.ndarray, folds: int) -> np.ndarray:
    """Fold index int (M,) of each image: its rank among its class's images, modulo ``folds``,
    so that every fold holds about 1/folds of every class."""
    labels = np.asarray(labels)
    fold = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        fold[where] = np.arange(len(where)) % folds
    return fold


def calibrated_log_loss(
    logits: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = 5
) -> np.ndarray:
    """Per-image log-loss float64 (M,) after temperature scaling fitted on the other folds.

    The images are split into ``folds`` stratified folds (:func:`stratified_folds`; fewer when a
    class has fewer images than folds, at least 2); the images of each fold are scored at the
    temperature that minimises the balanced log-loss of the remaining folds. With fewer than two
    images per class in every class, one temperature is fitted on all images.
    """
    labels = np.asarray(labels)
    z = np.asarray(logits, dtype=np.float64)
    smallest = min(int((labels == c).sum()) for c in np.unique(labels))
    folds = min(folds, smallest)
    if folds < 2:
        return per_image_log_loss(z / fit_temperature(z, labels, num_classes), labels)
    fold = stratified_folds(labels, folds)
    losses = np.empty(len(labels))
    for f in range(folds):
        held = fold == f
        temperature = fit_temperature(z[~held], labels[~held], num_classes)
        losses[held] = per_image_log_loss(z[held] / temperature, labels[held])
    return losses


def per_image_score(
    logits: np.ndarray, labels: np.ndarray, num_classes: int, score: MetaScore
) -> np.ndarray:
    """Per-image value float64 (M,) of ``score`` (lower is better), whose balanced mean is the
    design's score: cross-fitted calibrated log-loss, raw log-loss (nats) or 0/1 error."""
    if score == "calibrated_log_loss":
        return calibrated_log_loss(logits, labels, num_classes)
    if score == "log_loss":
        return per_image_log_loss(logits, labels)
    if score == "error":
        return (np.asarray(logits).argmax(axis=1) != np.asarray(labels)).astype(np.float64)
    raise ValueError(f"unknown meta score {score!r}; expected one of {sorted(SCORE_LABELS)}")


def weighted_difference(
    losses_a: np.ndarray, losses_b: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[float, float]:
    """Balanced score of a minus that of b, and its standard error, over the same meta images.

    ``losses_a`` and ``losses_b`` are per-image values float (M,) of any score (log-losses in
    nats, 0/1 errors), in the order of ``labels``.

    A NaN value marks an image that design is not scored on (cross-fitting); the difference is
    taken over the images where both values are finite.

    The balanced score is Σ_c (1/C) mean_{i ∈ c} ℓ_i over the C classes present; for the paired
    differences d_i = ℓ^a_i − ℓ^b_i its variance is Σ_c s_c² / (C² n_c), s_c² the sample variance
    of d within class c (sampling the meta images of each class anew).

    Returns:
        (difference, standard error), in the unit of the per-image values.
    """
    d = np.asarray(losses_a, dtype=np.float64) - np.asarray(losses_b, dtype=np.float64)
    # NaN marks an image a design may not be scored on (it was fitted on it: cross-fitting);
    # the difference is taken over the images both designs are scored on.
    scored = np.isfinite(d)
    labels, d = np.asarray(labels)[scored], d[scored]
    present = [c for c in range(num_classes) if (labels == c).any()]
    classes = len(present)
    mean = sum(d[labels == c].mean() for c in present) / classes
    variance = 0.0
    for c in present:
        dc = d[labels == c]
        if len(dc) > 1:
            variance += dc.var(ddof=1) / (classes**2 * len(dc))
    return float(mean), float(np.sqrt(variance))


def scored_balanced_mean(values: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """:func:`balanced_mean` of the per-image values (M,) over the images a design is scored on
    (finite values; NaN marks an image it was fitted on, under cross-fitting)."""
    values = np.asarray(values, dtype=np.float64)
    scored = np.isfinite(values)
    return balanced_mean(values[scored], np.asarray(labels)[scored], num_classes)


@dataclass(frozen=True)
class ScoredDesign:
    """A finished trial: its key, simplicity order and per-image meta scores (lower is better)."""

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
    scores = {d.key: scored_balanced_mean(d.losses, labels, num_classes) for d in designs}
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


ENSEMBLE_KEY = -1
"""The key of the finalists' ensemble among the candidates of :func:`choose_finalist`."""


@dataclass(frozen=True)
class FinalistChoice:
    """What :func:`choose_finalist` decided.

    Attributes:
        kept: key of the kept single design (with the ensemble kept: the simplest finalist within
            one standard error of the best finalist, the design the report names).
        ensemble_kept: whether the ensemble is the design's model.
        best_single: key of the finalist with the best score.
        rows: one row per candidate (the ensemble's key is ``ENSEMBLE_KEY``), as
            :func:`choose_within_one_standard_error` gives them.
    """

    kept: int
    ensemble_kept: bool
    best_single: int
    rows: list[dict[str, float]]


def choose_finalist(
    finalists: Sequence[ScoredDesign],
    ensemble: ScoredDesign | None,
    labels: np.ndarray,
    num_classes: int,
    *,
    one_standard_error: bool = True,
) -> FinalistChoice:
    """The choice among the finalists at full epochs and their ensemble.

    The ensemble (per-image scores NaN where some member may not be scored) is one more
    candidate, ordered after its members in simplicity, so the one-standard-error rule keeps it
    only where it beats every finalist by more than one standard error; without
    ``one_standard_error`` the best score wins. (Compared only with the finalist the rule kept,
    an ensemble can win against a simpler and worse finalist while the best finalist alone is
    as good as the ensemble.)

    Args:
        finalists: the scored finalists (at least one).
        ensemble: their ensemble, or None (one finalist, or ``design.ensemble`` off).
        labels: int (M,), the meta images' labels, in the order of every ``losses``.
        num_classes: K.
        one_standard_error: keep the simplest within one standard error of the best.
    """
    best_single, kept_single, _ = choose_within_one_standard_error(finalists, labels, num_classes)
    if not one_standard_error:
        kept_single = best_single
    candidates = [*finalists, ensemble] if ensemble is not None else list(finalists)
    best, kept, rows = choose_within_one_standard_error(candidates, labels, num_classes)
    if not one_standard_error:
        kept = best
    if kept == ENSEMBLE_KEY:
        return FinalistChoice(kept_single, True, best_single, rows)
    return FinalistChoice(kept, False, best_single, rows)
