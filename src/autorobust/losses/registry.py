"""The loss registry and the ``create_loss`` factory."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from autorobust._registry import Registry
from autorobust.errors import ConfigError
from autorobust.losses.base import ClassificationLoss

__all__ = ["LOSSES", "create_loss", "list_losses", "register_loss"]

LOSSES: Registry[type[ClassificationLoss]] = Registry("loss", plugins=True)


def register_loss(
    name: str,
) -> Callable[[type[ClassificationLoss]], type[ClassificationLoss]]:
    """Class decorator registering a :class:`ClassificationLoss` subclass under ``name``."""

    def decorator(cls: type[ClassificationLoss]) -> type[ClassificationLoss]:
        cls.name = name
        return LOSSES.register(name)(cls)

    return decorator


def list_losses() -> list[str]:
    """Names of the registered losses, sorted."""
    return LOSSES.names()


def loss_hyperparameter_names(name: str) -> list[str]:
    """The hyper-parameters that the loss registered as ``name`` accepts, in signature order."""
    cls = LOSSES.get(name)
    return [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "class_counts"
    ]


def create_loss(
    name: str, *, class_counts: Sequence[int] | np.ndarray | None, **hparams: Any
) -> ClassificationLoss:
    """Build the loss registered as ``name``.

    Args:
        name: a name from :func:`list_losses`, e.g. ``"logit_adjustment"``.
        class_counts: int (K,) training samples per class, counted on the observed (possibly
            noisy) labels. Required by the losses that use the class prior (class_balanced,
            logit_adjustment, ldam, balanced_softmax); the others ignore it and accept None.
        **hparams: the loss's hyper-parameters (see its class docstring and ``search_space``).

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the valid names.
        ConfigError: an unknown hyper-parameter (named, with the accepted ones), a value out of
            range, or invalid class counts (e.g. a class with 0 samples where log n_c is needed).
    """
    cls = LOSSES.get(name)
    accepted = loss_hyperparameter_names(name)
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ConfigError(
            f"loss {name!r}: unknown hyper-parameter {unknown[0]!r}; accepted: "
            f"{', '.join(accepted) or '(none)'}"
        )
    if cls.uses_class_counts:
        return cls(class_counts=class_counts, **hparams)
    return cls(**hparams)
