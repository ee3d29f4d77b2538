"""``small_loss``: the negative per-sample loss (the small-loss trick; DivideMix's signal)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from autorobust.errors import ConfigError
from autorobust.methods.sample_selection.detectors._base import DETECTORS, Detector
from autorobust.methods.sample_selection.detectors._posterior import log_softmax
from autorobust.methods.sample_selection.probe import ProbeOutputs

__all__ = ["SmallLossDetector"]


@DETECTORS.register("small_loss")
class SmallLossDetector(Detector):
    """Score -l_i, the probe's per-sample loss of the observed label (Li et al., ICLR 2020,
    DivideMix, fit their mixture to these losses).

    With the probe's ``losses`` given (its training loss, e.g. logit-adjusted, or MW-Net's
    recorded losses), those are used, and the meta images are scored by ``meta_losses`` when
    given (never by another loss, whose scale would differ). Without ``losses``, the loss is the
    cross-entropy of the raw logits, which makes the score equal to ``posterior``'s.
    """

    name: ClassVar[str] = "small_loss"

    def check(self, probe: ProbeOutputs) -> None:
        if probe.losses is None and probe.logits is None:
            raise ConfigError(
                "detector 'small_loss' needs the probe's losses (or its logits), which were not "
                "given"
            )

    def observed_scores(self, probe: ProbeOutputs) -> np.ndarray:
        self.check(probe)
        if probe.losses is not None:
            return -probe.losses
        # check(): without losses, the logits were given
        return self._cross_entropy_scores(self._required(probe.logits, "logits"), probe.labels)

    def candidate_scores(self, probe: ProbeOutputs, labels: np.ndarray) -> np.ndarray | None:
        if probe.losses is not None or probe.logits is None:
            return None  # a given loss is known only for the observed labels
        return self._cross_entropy_scores(probe.logits, np.asarray(labels))

    def meta_scores(self, probe: ProbeOutputs) -> np.ndarray | None:
        if probe.losses is not None:
            return None if probe.meta_losses is None else -probe.meta_losses
        if probe.meta_logits is None:
            return None
        return self._cross_entropy_scores(probe.meta_logits, probe.meta_labels)

    @staticmethod
    def _cross_entropy_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return log_softmax(logits)[np.arange(len(labels)), labels]
