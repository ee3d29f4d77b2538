"""``mean_loss``: minus the per-sample training loss averaged over the recorded epochs."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from autorobust.methods.sample_selection.detectors._base import DETECTORS, Detector
from autorobust.methods.sample_selection.detectors._dynamics_options import (
    check_first_epoch,
    mean_from,
)
from autorobust.methods.sample_selection.probe import ProbeOutputs

__all__ = ["MeanLossDetector"]


@DETECTORS.register("mean_loss")
class MeanLossDetector(Detector):
    """Score -mean_e l_i(e), minus sample i's training loss of its observed label averaged over
    the recorded epochs e >= ``first_epoch`` (the small-loss trick of Han et al. 2018,
    Co-teaching, and Li et al. 2020, DivideMix, taken over the training dynamics as in Pleiss et
    al. 2020 rather than from one snapshot). The losses are those of the probe run's training
    forward passes (``train.record_dynamics``), known only for the observed labels of the pool:
    no candidate and no meta scores; use the ``gmm`` or ``otsu`` rule.

    Options:
        first_epoch: the first recorded epoch averaged; default 0.
    """

    name: ClassVar[str] = "mean_loss"
    requires: ClassVar[tuple[str, ...]] = ("epoch_losses",)

    def __init__(self, *, first_epoch: int = 0) -> None:
        self.first_epoch = check_first_epoch(first_epoch)

    def options(self) -> dict[str, Any]:
        return {"first_epoch": self.first_epoch}

    def observed_scores(self, probe: ProbeOutputs) -> np.ndarray:
        self.check(probe)
        losses = self._required(probe.epoch_losses, "epoch_losses")
        return -mean_from(losses, self.first_epoch, self.name)
