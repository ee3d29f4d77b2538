"""The ``first_epoch`` option shared by the detectors that average recorded training dynamics."""

from __future__ import annotations

import numpy as np

from autorobust.errors import ConfigError

__all__ = ["check_first_epoch", "mean_from"]


def check_first_epoch(first_epoch: int) -> int:
    """``first_epoch`` (an integer >= 0) or a ValueError naming it (the option builder turns it
    into a one-line ConfigError naming ``selection.detector_options``)."""
    if isinstance(first_epoch, bool) or not isinstance(first_epoch, int) or first_epoch < 0:
        raise ValueError(f"first_epoch must be an integer >= 0, got {first_epoch!r}")
    return first_epoch


def mean_from(values: np.ndarray, first_epoch: int, detector: str) -> np.ndarray:
    """Row means float64 (N,) of ``values`` (N, E) over epochs ``first_epoch``..E-1.

    Raises:
        ConfigError: ``first_epoch`` >= E (no epoch left to average); one line naming the option.
    """
    epochs = values.shape[1]
    if first_epoch >= epochs:
        raise ConfigError(
            f"selection.detector_options: detector {detector!r}: first_epoch {first_epoch} "
            f"leaves none of the {epochs} recorded epochs"
        )
    return np.asarray(values[:, first_epoch:], dtype=np.float64).mean(axis=1)
