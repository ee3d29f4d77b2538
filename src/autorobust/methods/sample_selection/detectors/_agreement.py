"""``agreement``: a label is clean only when the training dynamics and the posterior agree."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.stats import rankdata

from autorobust.methods.sample_selection.detectors._base import DETECTORS, Detector
from autorobust.methods.sample_selection.detectors._dynamics_options import (
    check_first_epoch,
    mean_from,
)
from autorobust.methods.sample_selection.detectors._posterior import log_softmax
from autorobust.methods.sample_selection.probe import ProbeOutputs

__all__ = ["AgreementDetector", "class_ranks"]

_SCALES = ("rank", "minmax")


def class_ranks(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Each score's rank within its class scaled to [0, 1], float64 (N,).

    Within class c of n_c samples, (r - 1) / (n_c - 1) for the 1-based rank r of the score
    (ties: their average rank); 1 for the only sample of a class. ``scores`` float (N,),
    ``labels`` int64 (N,) in [0, K).
    """
    out = np.ones(len(scores), dtype=np.float64)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if members.size > 1:
            out[members] = (rankdata(scores[members]) - 1.0) / (members.size - 1)
    return out


def class_minmax(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Each score scaled to [0, 1] by its class's minimum and maximum, float64 (N,) (1 for a
    class whose scores are all equal)."""
    out = np.ones(len(scores), dtype=np.float64)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if members.size == 0:
            continue
        low, high = scores[members].min(), scores[members].max()
        if high > low:
            out[members] = (scores[members] - low) / (high - low)
    return out


@DETECTORS.register("agreement")
class AgreementDetector(Detector):
    """Score min(a_i, p_i) of two views of the label, each scaled to [0, 1] within the observed
    class: a_i of the training dynamics (AUM, Pleiss et al. 2020, over epochs >= ``first_epoch``)
    and p_i of the probe's posterior log p(y_i | x_i). A label scores high only when both views
    call it clean, the agreement of two views that co-teaching (Han et al. 2018) and DivideMix
    (Li et al. 2020) use against the errors of any one view; here the views are the trajectory
    of training and its end point, which err on different samples (an overlapping class pair
    such as Shirt vs T-shirt confuses the final posterior, while the margin over the epochs
    remembers that the label was fought over).

    ``scale: rank`` (default) scales by the rank within the class, (r - 1) / (n_c - 1), so the
    two views' units do not matter; ``scale: minmax`` by the class's minimum and maximum, which
    keeps the gaps between clean and noisy groups that the ``gmm`` and ``otsu`` rules look for
    (ranks are uniform in the class whatever its noise rate).

    There are no meta scores: a meta image was never trained on, so it has no margins, and its
    posterior view alone only bounds its agreement score from above (min(a, p) <= p); a threshold
    calibrated on it (``meta_quantile``) would sit too high. Use the ``gmm`` or ``otsu`` rule.

    Options:
        first_epoch: the first recorded epoch of the AUM view; default 0.
        scale: ``rank`` or ``minmax``; default ``rank``.
    """

    name: ClassVar[str] = "agreement"
    requires: ClassVar[tuple[str, ...]] = ("margins", "logits")

    def __init__(self, *, first_epoch: int = 0, scale: str = "rank") -> None:
        self.first_epoch = check_first_epoch(first_epoch)
        if scale not in _SCALES:
            raise ValueError(f"scale must be one of {', '.join(_SCALES)}, got {scale!r}")
        self.scale = scale

    def options(self) -> dict[str, Any]:
        return {"first_epoch": self.first_epoch, "scale": self.scale}

    def observed_scores(self, probe: ProbeOutputs) -> np.ndarray:
        self.check(probe)
        labels, k = probe.labels, probe.num_classes
        aum = mean_from(self._required(probe.margins, "margins"), self.first_epoch, self.name)
        logits = self._required(probe.logits, "logits")
        posterior = log_softmax(logits)[np.arange(len(labels)), labels]
        scale = class_ranks if self.scale == "rank" else class_minmax
        return np.minimum(scale(aum, labels, k), scale(posterior, labels, k))
