"""``aum``: the area under the margin of the training dynamics (Pleiss et al. 2020)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from autorobust.methods.sample_selection.detectors._base import DETECTORS, Detector
from autorobust.methods.sample_selection.detectors._dynamics_options import (
    check_first_epoch,
    mean_from,
)
from autorobust.methods.sample_selection.probe import ProbeOutputs

__all__ = ["AumDetector"]


@DETECTORS.register("aum")
class AumDetector(Detector):
    """Score AUM_i = mean_e (z_{y_i}(x_i, e) - max_{c != y_i} z_c(x_i, e)), the margin of the
    observed label averaged over the recorded epochs e >= ``first_epoch`` (Pleiss et al. 2020,
    "Identifying mislabeled data using the area under the margin ranking"), in logit units.

    A clean sample's margin grows as its class is learned; a mislabelled one's stays low or
    negative, since the samples of its true class pull the model towards that class. The margins
    are those of the probe run's training forward passes (``train.record_dynamics``), so only the
    pool's observed labels are scored: no candidate and no meta scores (the meta images were not
    trained on); use the ``gmm`` or ``otsu`` rule.

    Options:
        first_epoch: the first recorded epoch averaged (skip the first, noisy epochs); default 0.
    """

    name: ClassVar[str] = "aum"
    requires: ClassVar[tuple[str, ...]] = ("margins",)

    def __init__(self, *, first_epoch: int = 0) -> None:
        self.first_epoch = check_first_epoch(first_epoch)

    def options(self) -> dict[str, Any]:
        return {"first_epoch": self.first_epoch}

    def observed_scores(self, probe: ProbeOutputs) -> np.ndarray:
        self.check(probe)
        return mean_from(self._required(probe.margins, "margins"), self.first_epoch, self.name)
