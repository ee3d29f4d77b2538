"""The search kinds (``autorobust search KIND``, ``autorobust.search_KIND``): a registry.

A search kind is declared by a :class:`SearchKind`: its help line, where its ``run_search`` lives
(imported on first use, so that listing the kinds for ``autorobust --help`` loads neither torch
nor Optuna) and the command-line options of its own. The baseline search is declared here; a
method declares its own in a small module of its package (``methods/*/search_kind.py``) named as
an entry point of the group ``autorobust.search_kinds`` in ``pyproject.toml``, which
:data:`SEARCH_KINDS` imports the first time it is asked for a name it does not hold (see
:mod:`autorobust._registry`). Another package can add a search kind the same way.

Every ``run_search`` takes ``(config, *, default_study_name, retrain, splits, ...)`` and returns a
:class:`~autorobust.search.common.SearchOutcome`; the kind's options are passed by keyword.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autorobust._registry import Registry

if TYPE_CHECKING:
    from autorobust.search.common import SearchOutcome

__all__ = [
    "SEARCH_KINDS",
    "SEARCH_KIND_GROUP",
    "SearchKind",
    "SearchOption",
    "register_search_kind",
]

SEARCH_KIND_GROUP = "autorobust.search_kinds"
"""The entry-point group of the modules that declare search kinds; each must import no torch."""


@dataclass(frozen=True)
class SearchOption:
    """A command-line option of one search kind, passed to its ``run_search`` by keyword.

    Attributes:
        flag: the option (``"--fitness"``); the keyword is its name with ``_`` for ``-``.
        help: its help line.
        choices: the values it accepts (None: any string).
    """

    flag: str
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def keyword(self) -> str:
        """The keyword argument of ``run_search`` that receives the option's value."""
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class SearchKind:
    """One search kind.

    Attributes:
        name: the kind (``autorobust search NAME``).
        help: its help line.
        target: ``"package.module:function"``, the kind's ``run_search``.
        options: command-line options of its own.
    """

    name: str
    help: str
    target: str
    options: tuple[SearchOption, ...] = ()

    @property
    def module(self) -> str:
        """The module that defines the kind's ``run_search``."""
        return self.target.partition(":")[0]

    @property
    def attribute(self) -> str:
        """The name of the kind's ``run_search`` in :attr:`module`."""
        return self.target.partition(":")[2]

    def load(self) -> Callable[..., SearchOutcome]:
        """The kind's ``run_search`` (importing its module)."""
        function: Callable[..., SearchOutcome] = getattr(
            importlib.import_module(self.module), self.attribute
        )
        return function

    def run(self, *args: Any, **kwargs: Any) -> SearchOutcome:
        """Call the kind's ``run_search`` with these arguments."""
        return self.load()(*args, **kwargs)


SEARCH_KINDS: Registry[SearchKind] = Registry("search kind", plugins=True, group=SEARCH_KIND_GROUP)


def register_search_kind(
    name: str, *, help: str, target: str, options: tuple[SearchOption, ...] = ()
) -> SearchKind:
    """Declare the search kind ``name`` (see :class:`SearchKind`); returns it."""
    kind = SearchKind(name=name, help=help, target=target, options=options)
    return SEARCH_KINDS.register(name)(kind)


register_search_kind(
    "baseline",
    help="TPE over the baseline losses and learning rate",
    target="autorobust.search.baseline:run_search",
)
