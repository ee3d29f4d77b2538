"""Config section ``bilevel``: AutoBalance: the parametric loss learned by bilevel optimisation, and its search."""

from __future__ import annotations

from autorobust.config.base import StrictModel

__all__ = ["BilevelConfig"]


class BilevelConfig(StrictModel):
    """AutoBalance: the parametric loss learned by bilevel optimisation, and its search."""
