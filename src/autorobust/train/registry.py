"""Training methods by name (``method:`` in a config): ``erm`` and the ones later issues add.

A method is a builder ``(config, splits, **trainer_kwargs) -> Trainer``; ``trainer_kwargs`` are
the keyword arguments of :class:`~autorobust.train.trainer.Trainer` (model, loss, settings, device,
seed, run_dir, callbacks, fingerprint).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from autorobust._registry import Registry
from autorobust.train.trainer import Trainer

__all__ = ["TRAINERS", "create_trainer", "register_trainer"]

TrainerBuilder = Callable[..., Trainer]
TRAINERS: Registry[TrainerBuilder] = Registry("training method")

# Modules that register further methods, imported on first use so that importing the trainer does
# not import every method.
_METHOD_MODULES = {
    "reweight": "autorobust.train.reweighting",
    "darts": "autorobust.models.darts.training",
}


def register_trainer(name: str) -> Callable[[TrainerBuilder], TrainerBuilder]:
    """Decorator registering a trainer builder under ``name``."""
    return TRAINERS.register(name)


@register_trainer("erm")
def _build_erm(config: Any, splits: Any, **trainer_kwargs: Any) -> Trainer:
    return Trainer(**trainer_kwargs)


def create_trainer(method: str, config: Any, splits: Any, **trainer_kwargs: Any) -> Trainer:
    """Build the trainer of ``method`` for ``config`` and ``splits``."""
    if method not in TRAINERS and method in _METHOD_MODULES:
        importlib.import_module(_METHOD_MODULES[method])
    return TRAINERS.get(method)(config, splits, **trainer_kwargs)
