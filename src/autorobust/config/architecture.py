"""Config section ``architecture``: CSNAS: the DARTS cell search space, the label-free fitness and the search."""

from __future__ import annotations

from autorobust.config.base import StrictModel

__all__ = ["ArchitectureConfig"]


class ArchitectureConfig(StrictModel):
    """CSNAS: the DARTS cell search space, the label-free fitness and the search."""
