"""Training methods by name (``method:`` in a config).

A method is a builder ``(config, splits, **trainer_kwargs) -> Trainer``; ``trainer_kwargs`` are
the keyword arguments of :class:`~autorobust.train.trainer.Trainer` (model, loss, settings, device,
seed, run_dir, callbacks, fingerprint). ``erm`` is registered here; every other method registers
its builder from its own package (``autorobust/methods/<name>/trainer.py``), which the registry
imports as a plugin on first use (see :mod:`autorobust._registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autorobust._registry import Registry
from autorobust.train.trainer import Trainer

__all__ = ["TRAINERS", "create_trainer", "register_trainer"]

TrainerBuilder = Callable[..., Trainer]
TRAINERS: Registry[TrainerBuilder] = Registry("training method", plugins=True)


def register_trainer(name: str) -> Callable[[TrainerBuilder], TrainerBuilder]:
    """Decorator registering a trainer builder under ``name``."""
    return TRAINERS.register(name)


@register_trainer("erm")
def _build_erm(config: Any, splits: Any, **trainer_kwargs: Any) -> Trainer:
    return Trainer(**trainer_kwargs)


def create_trainer(method: str, config: Any, splits: Any, **trainer_kwargs: Any) -> Trainer:
    """Build the trainer of ``method`` for ``config`` and ``splits``."""
    return TRAINERS.get(method)(config, splits, **trainer_kwargs)
