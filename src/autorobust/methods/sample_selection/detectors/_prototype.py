"""``prototype``: cosine similarity to the clean meta set's class prototypes (RoLT)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from autorobust.errors import DataError
from autorobust.methods.sample_selection.detectors._base import DETECTORS, Detector
from autorobust.methods.sample_selection.probe import ProbeOutputs

__all__ = [
    "PrototypeDetector",
    "class_prototypes",
    "normalize_rows",
    "prototype_labels",
    "prototype_similarities",
]

# Rows shorter than this (a dead ReLU feature vector) are left at zero rather than divided by ~0.
_EPS = 1e-12


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (N, D) scaled to unit Euclidean norm (a zero row stays zero), float64."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def class_prototypes(
    meta_features: np.ndarray, meta_labels: np.ndarray, num_classes: int
) -> np.ndarray:
    """Unit-norm prototypes float64 (K, D): the normalised mean of each class's normalised meta
    features (the meta labels are clean, so the prototypes are too).

    Raises:
        DataError: a class has no meta image.
    """
    f = normalize_rows(meta_features)
    counts = np.bincount(meta_labels, minlength=num_classes)
    if (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0])
        raise DataError(f"probe outputs: the meta set has no image of class {c}; no prototype")
    sums = np.zeros((num_classes, f.shape[1]))
    np.add.at(sums, meta_labels, f)
    return normalize_rows(sums)


def prototype_similarities(features: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """Cosine similarity float64 (N, K) of every feature row (N, D) to every prototype (K, D)."""
    return normalize_rows(features) @ prototypes.T


def prototype_labels(probe: ProbeOutputs) -> np.ndarray:
    """The nearest prototype's class int64 (N,) of every pool sample (RoLT's label guess)."""
    if probe.features is None or probe.meta_features is None:
        raise DataError(
            "probe outputs: the prototype label needs the probe's features and meta_features"
        )
    prototypes = class_prototypes(probe.meta_features, probe.meta_labels, probe.num_classes)
    return prototype_similarities(probe.features, prototypes).argmax(1).astype(np.int64)


def _label_scores(similarities: np.ndarray, labels: np.ndarray, margin: bool) -> np.ndarray:
    rows = np.arange(len(labels))
    own = similarities[rows, labels]
    if not margin:
        return own
    others = similarities.copy()
    others[rows, labels] = -np.inf
    return own - others.max(1)


@DETECTORS.register("prototype")
class PrototypeDetector(Detector):
    """Score cos(f_i, p_y): the cosine similarity of a sample's normalised penultimate feature to
    the prototype of its label, built from the clean meta set (Wei et al. 2021, "Robust
    long-tailed learning under label noise" (RoLT), who argue that distances to class prototypes
    separate noisy labels of tail classes, where the small-loss trick fails because clean tail
    samples have high losses too). With ``margin``, minus the best other class's similarity, so
    that a sample near two prototypes scores low.

    Meta images are scored against leave-one-out prototypes of their own class (built without
    them; a class with a single meta image keeps its full prototype), so that their scores, which
    calibrate the thresholds, are not inflated by the image itself.

    Options:
        margin: subtract max_{c != y} cos(f_i, p_c); default False.
    """

    name: ClassVar[str] = "prototype"
    requires: ClassVar[tuple[str, ...]] = ("features", "meta_features")

    def __init__(self, *, margin: bool = False) -> None:
        if not isinstance(margin, bool):
            raise ValueError(f"margin must be true or false, got {margin!r}")
        self.margin = margin

    def options(self) -> dict[str, Any]:
        return {"margin": self.margin}

    def observed_scores(self, probe: ProbeOutputs) -> np.ndarray:
        return self.candidate_scores(probe, probe.labels)

    def candidate_scores(self, probe: ProbeOutputs, labels: np.ndarray) -> np.ndarray:
        self.check(probe)
        meta_features = self._required(probe.meta_features, "meta_features")
        prototypes = class_prototypes(meta_features, probe.meta_labels, probe.num_classes)
        similarities = prototype_similarities(
            self._required(probe.features, "features"), prototypes
        )
        return _label_scores(similarities, np.asarray(labels), self.margin)

    def meta_scores(self, probe: ProbeOutputs) -> np.ndarray:
        self.check(probe)
        k, labels = probe.num_classes, probe.meta_labels
        meta_features = self._required(probe.meta_features, "meta_features")
        f = normalize_rows(meta_features)
        prototypes = class_prototypes(meta_features, labels, k)
        similarities = f @ prototypes.T
        sums = np.zeros((k, f.shape[1]))
        np.add.at(sums, labels, f)
        counts = np.bincount(labels, minlength=k)
        alone = counts[labels] == 1
        own = normalize_rows(np.where(alone[:, None], sums[labels], sums[labels] - f))
        similarities[np.arange(len(labels)), labels] = (f * own).sum(1)
        return _label_scores(similarities, labels, self.margin)
