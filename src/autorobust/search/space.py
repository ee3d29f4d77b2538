"""What every search space offers the driver: a point from a trial, the inverse, a description.

A search space only asks an Optuna trial for values (``trial.suggest_*``); what its method trains
from a point is its own ``apply`` (an :class:`~autorobust.config.ExperimentConfig` for the baseline
losses and Meta-Weight-Net's V, a ``BilevelConfig`` for AutoBalance's knobs, a ``Genotype`` for
CSNAS's cells), because those differ in kind. The design's ``DesignSpace`` follows the same shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

__all__ = ["PointT", "SearchSpace"]

PointT = TypeVar("PointT")
"""The type of one point of a space (a dict of values, or the method's own object)."""


class SearchSpace(ABC, Generic[PointT]):
    """A search space: :meth:`suggest` draws a point, :meth:`point_from_params` rebuilds one from
    a finished trial's parameters, :meth:`describe` says what the space is.

    :func:`autorobust.search.driver.drive_search` stores :meth:`describe` with the study (merged
    with what else makes trial values comparable, such as the trial epochs), and a resumed study
    must match it.
    """

    @abstractmethod
    def suggest(self, trial: Any) -> PointT:
        """Ask ``trial`` (an ``optuna.Trial``) for a point; calls only ``trial.suggest_*``."""

    @abstractmethod
    def point_from_params(self, params: Mapping[str, Any]) -> PointT:
        """Invert :meth:`suggest`: Optuna's flat parameters of a trial -> its point."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The space as JSON-able data (stored with a study; a resumed study must match)."""
