"""Declares ``autorobust search loss`` (an entry point of ``autorobust.search_kinds``).

Imports no torch: the command line lists the search kinds at start-up.
"""

from __future__ import annotations

from autorobust.search.kinds import register_search_kind

__all__ = ["LOSS"]

LOSS = register_search_kind(
    "loss",
    help="AutoBalance: a loss learned by bilevel optimisation",
    target="autorobust.methods.autobalance.search:run_search",
)
