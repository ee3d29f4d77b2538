"""Declares ``autorobust search architecture`` (an entry point of ``autorobust.search_kinds``).

Imports no torch: the command line lists the search kinds at start-up.
"""

from __future__ import annotations

from autorobust.methods.csnas.config import FITNESS_NAMES  # a leaf: pydantic only
from autorobust.search.kinds import SearchOption, register_search_kind

__all__ = ["ARCHITECTURE"]

ARCHITECTURE = register_search_kind(
    "architecture",
    help="CSNAS: label-free DARTS cell search",
    target="autorobust.methods.csnas.search:run_search",
    # Only the architecture search scores candidates in more than one way.
    options=(
        SearchOption(
            "--fitness",
            help="how a candidate cell is scored (default: the config's architecture.fitness)",
            choices=tuple(FITNESS_NAMES),
        ),
    ),
)
