"""Config section ``reweight``: Meta-Weight-Net sample reweighting (``method: reweight``) and its search."""

from __future__ import annotations

from autorobust.config.base import StrictModel

__all__ = ["ReweightConfig"]


class ReweightConfig(StrictModel):
    """Meta-Weight-Net sample reweighting (``method: reweight``) and its search."""
