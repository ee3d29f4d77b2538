"""The model registry and the ``create_model`` factory (timm style)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from autorobust._registry import Registry
from autorobust.errors import ConfigError
from autorobust.models.base import Classifier, _check_positive_int

__all__ = ["MODELS", "create_model", "list_models", "model_option_names", "register_model"]

ModelFactory = Callable[..., Classifier]

MODELS: Registry[ModelFactory] = Registry("model", plugins=True)


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a factory (a :class:`Classifier` subclass or a function) as ``name``.

    The factory is called with keyword arguments only: ``num_classes``, ``in_channels`` and the
    model's own options.
    """
    return MODELS.register(name)


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return MODELS.names()


def model_option_names(name: str) -> list[str]:
    """The options (keyword arguments besides ``num_classes`` and ``in_channels``) that the model
    registered as ``name`` accepts, in signature order.

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the valid names.
    """
    return _option_names(MODELS.get(name))


def create_model(name: str, *, num_classes: int, in_channels: int, **kwargs: Any) -> Classifier:
    """Build the model registered as ``name``.

    Args:
        name: a name from :func:`list_models`, e.g. ``"small_cnn"`` or ``"resnet32"``.
        num_classes: K >= 2, the number of logits.
        in_channels: C >= 1, image channels.
        **kwargs: the model's own options (e.g. ``width`` for ``small_cnn``).

    Returns:
        A freshly initialised :class:`Classifier` on the CPU (initialisation draws from torch's
        global generator; fork it around the call for a reproducible model).

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the valid names.
        ConfigError: ``num_classes`` / ``in_channels`` out of range, or an option the model does
            not accept (the message names it and the accepted ones).
    """
    factory = MODELS.get(name)
    num_classes = _check_positive_int(num_classes, "num_classes", 2, f"model {name!r}")
    in_channels = _check_positive_int(in_channels, "in_channels", 1, f"model {name!r}")
    accepted = _option_names(factory)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"model {name!r}: unknown option {unknown[0]!r}; accepted: "
            f"{', '.join(accepted) or '(none)'}"
        )
    return factory(num_classes=num_classes, in_channels=in_channels, **kwargs)


def _option_names(factory: ModelFactory) -> list[str]:
    """The keyword options of ``factory`` other than ``num_classes`` and ``in_channels``."""
    signature = inspect.signature(factory)
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [
        p.name
        for p in signature.parameters.values()
        if p.kind in kinds and p.name not in ("self", "num_classes", "in_channels")
    ]
