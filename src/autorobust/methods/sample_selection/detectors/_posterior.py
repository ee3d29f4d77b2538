"""``posterior``: the probe's log-probability of the label."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from autorobust.methods.sample_selection.detectors._base import DETECTORS, Detector
from autorobust.methods.sample_selection.probe import ProbeOutputs

__all__ = ["PosteriorDetector", "log_softmax"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, float64, computed stably (max subtracted)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _pick(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return values[np.arange(len(labels)), labels]


@DETECTORS.register("posterior")
class PosteriorDetector(Detector):
    """Score log p(y | x) = log softmax(z)_y of the probe's raw logits z.

    With a logit-adjusted probe the raw logits estimate the balanced posterior, so a tail sample
    is not scored low just for being rare. Meta images: log p(y_j | x_j) of their clean label.
    """

    name: ClassVar[str] = "posterior"
    requires: ClassVar[tuple[str, ...]] = ("logits",)

    def observed_scores(self, probe: ProbeOutputs) -> np.ndarray:
        return self.candidate_scores(probe, probe.labels)

    def candidate_scores(self, probe: ProbeOutputs, labels: np.ndarray) -> np.ndarray:
        self.check(probe)
        return _pick(log_softmax(self._required(probe.logits, "logits")), np.asarray(labels))

    def meta_scores(self, probe: ProbeOutputs) -> np.ndarray | None:
        if probe.meta_logits is None:
            return None
        return _pick(log_softmax(probe.meta_logits), probe.meta_labels)
