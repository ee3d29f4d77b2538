"""Declares ``autorobust search reweighter`` (an entry point of ``autorobust.search_kinds``).

Imports no torch: the command line lists the search kinds at start-up.
"""

from __future__ import annotations

from autorobust.search.kinds import register_search_kind

__all__ = ["REWEIGHTER"]

REWEIGHTER = register_search_kind(
    "reweighter",
    help="TPE over the Meta-Weight-Net architecture and input (MW-Net NAS)",
    target="autorobust.methods.meta_weight_net.search:run_search",
)
