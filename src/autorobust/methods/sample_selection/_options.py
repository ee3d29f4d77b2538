"""Building a registered detector or rule from its name and keyword options (config fields)."""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from autorobust._registry import Registry
from autorobust.errors import AutorobustError, ConfigError

__all__ = ["build"]

T = TypeVar("T")


def build(registry: Registry[type[T]], name: str, options: dict[str, Any], field: str) -> T:
    """``registry.get(name)(**options)`` with one-line errors naming the config ``field``.

    Raises:
        UnknownNameError: ``name`` is not registered (``field``: unknown ... ; valid: ...).
        ConfigError: an option the class does not take, or a value it refuses.
    """
    try:
        cls = registry.get(name)
    except AutorobustError as exc:
        raise type(exc)(f"{field}: {exc}") from None
    accepted = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{field}_options: {registry.kind} {name!r} has no option {unknown[0]!r}; accepted: "
            f"{', '.join(accepted) or '(none)'}"
        )
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, AutorobustError):
            raise
        raise ConfigError(f"{field}_options: {registry.kind} {name!r}: {exc}") from None
