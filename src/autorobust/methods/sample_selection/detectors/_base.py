"""The :class:`Detector` interface, its registry and :func:`create_detector`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from autorobust._registry import Registry
from autorobust.errors import ConfigError
from autorobust.methods.sample_selection._options import build
from autorobust.methods.sample_selection.probe import ProbeOutputs

__all__ = ["DETECTORS", "Detector", "create_detector"]


class Detector(ABC):
    """Maps a probe's outputs to a per-sample *clean score* of a label: higher = more likely clean.

    Class attributes: ``name`` (the registry name) and ``requires`` (the
    :class:`ProbeOutputs` arrays it reads). Options are keyword-only constructor arguments.
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()

    def check(self, probe: ProbeOutputs) -> None:
        """Raise a one-line ConfigError when ``probe`` lacks an array this detector reads."""
        missing = probe.missing(self.requires)
        if missing:
            raise ConfigError(
                f"detector {self.name!r} needs the probe's {', '.join(missing)}, which were not "
                "given"
            )

    def _required(self, array: np.ndarray | None, name: str) -> np.ndarray:
        """The probe's array ``name`` (passed as ``array``), refused as :meth:`check` refuses it
        when it was not given; narrows the optional attribute for the type checker."""
        if array is None:
            raise ConfigError(
                f"detector {self.name!r} needs the probe's {name}, which were not given"
            )
        return array

    @abstractmethod
    def observed_scores(self, probe: ProbeOutputs) -> np.ndarray:
        """Clean score of every pool sample's observed label, float64 (N,)."""

    def candidate_scores(self, probe: ProbeOutputs, labels: np.ndarray) -> np.ndarray | None:
        """Score of pool sample i if its label were ``labels[i]`` (int64 (N,)), float64 (N,), or
        None when the detector can only score the observed labels (relabelling then relies on
        the probe's confidence alone)."""
        return None

    def meta_scores(self, probe: ProbeOutputs) -> np.ndarray | None:
        """Score of every clean meta image for its own class, float64 (M,), for calibrating
        thresholds; None when the detector cannot score them."""
        return None

    def options(self) -> dict[str, Any]:
        """The constructor's options and their values (for reports)."""
        return {}


DETECTORS: Registry[type[Detector]] = Registry("detector")


def create_detector(name: str, options: dict[str, Any] | None = None) -> Detector:
    """Build the detector registered as ``name`` with keyword ``options``.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the names).
        ConfigError: an unknown option or a refused value.
    """
    return build(DETECTORS, name, dict(options or {}), "selection.detector")
