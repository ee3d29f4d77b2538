"""A small name -> factory registry shared by models, losses, data sources and training methods.

Methods add their own entries (the ``darts`` model, the ``parametric`` loss, the ``reweight``
training method, ...) from their packages under ``autorobust/methods/``. The shared layers never
import those packages: each registering module is declared as an entry point of the group
``autorobust.plugins`` (in ``pyproject.toml``), and a registry imports every declared module the
first time it is asked for a name it does not hold, or for its list of names. Another package can
add its own model, loss or method the same way. A registry may read another group: the search kinds
(``autorobust.search.kinds``) read ``autorobust.search_kinds``, whose modules import no torch.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from autorobust.errors import UnknownNameError

__all__ = ["PLUGIN_GROUP", "Registry", "load_plugins"]

T = TypeVar("T")

PLUGIN_GROUP = "autorobust.plugins"
_loaded: set[str] = set()


def load_plugins(group: str = PLUGIN_GROUP) -> None:
    """Import every module declared under the entry-point group ``group``, once.

    Importing a module runs its ``@register_*`` decorators. A plugin that fails to import is a bug
    of that plugin, and its error propagates.
    """
    if group in _loaded:
        return
    # First, so that a plugin that looks a name up while importing does not recurse.
    _loaded.add(group)
    for entry_point in importlib.metadata.entry_points(group=group):
        entry_point.load()


class Registry(Generic[T]):
    """Maps names to factories; ``register`` is a decorator, ``get`` raises with the valid names.

    Args:
        kind: what the registry holds, used in error messages ("model", "loss", ...).
        plugins: whether methods' packages add entries (see :func:`load_plugins`); the
            registries of the search runner, for one, must not import torch to list a name.
        group: the entry-point group of the modules that add entries.
    """

    def __init__(self, kind: str, *, plugins: bool = False, group: str = PLUGIN_GROUP) -> None:
        self.kind = kind
        self.plugins = plugins
        self.group = group
        self._entries: dict[str, T] = {}

    def _load_plugins(self) -> None:
        if self.plugins:
            load_plugins(self.group)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name is a programming error."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the entry for ``name``; raise :class:`UnknownNameError` listing valid names."""
        if name not in self._entries:
            self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def names(self) -> list[str]:
        """Registered names (plugins included), sorted."""
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
