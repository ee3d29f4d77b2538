"""The :class:`Fitness` interface, its registry and :func:`create_fitness`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from autorobust._registry import Registry
from autorobust.methods.csnas.config import ArchitectureConfig
from autorobust.models.base import Classifier

__all__ = ["FITNESSES", "Fitness", "FitnessResult", "Report", "create_fitness"]

Report = Callable[[int, float], None]
"""Called after each epoch with (epoch, value); may raise (e.g. ``optuna.TrialPruned``)."""


@dataclass(frozen=True)
class FitnessResult:
    """A scored candidate.

    Attributes:
        value: the fitness (lower is better): the last epoch's value of a trained fitness, the
            negated score of a training-free one.
        history: one value per epoch (a training-free fitness: its one value).
        seconds: wall time of the evaluation.
        cpu_seconds: CPU time of the evaluating process (``time.process_time``), which does not
            depend on what else runs on the machine.
    """

    value: float
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0


class Fitness(ABC):
    """Scores a candidate network; lower values are better (the search minimises them).

    Class attributes: ``name`` (the registry name), ``uses_labels`` (whether any label is read),
    ``trains`` (whether the candidate is trained before it is scored).

    Args:
        settings: the ``architecture`` config section.
        device: where the candidate runs.
        seed: seeds everything the fitness draws (heads, shuffling, views, batches, initial
            weights).
    """

    name: ClassVar[str]
    uses_labels: ClassVar[bool]
    trains: ClassVar[bool] = True
    direction: ClassVar[str] = "minimize"

    def __init__(self, *, settings: ArchitectureConfig, device: torch.device, seed: int) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.seed = seed

    @abstractmethod
    def evaluate(
        self, network: Classifier, splits: Any, *, report: Report | None = None
    ) -> FitnessResult:
        """Score ``network`` (a freshly initialised candidate; it may be modified in place).

        Args:
            network: any :class:`Classifier`.
            splits: a :class:`~autorobust.data.splits.Splits`; a label-free fitness reads only its
                ``unlabeled`` attribute.
            report: called with (epoch, value) after every epoch (once for a training-free score).

        Raises:
            AutorobustError: the score is not finite (a diverged training, a singular kernel).
        """


FITNESSES: Registry[type[Fitness]] = Registry("fitness")


def create_fitness(
    name: str, *, settings: ArchitectureConfig, device: torch.device, seed: int
) -> Fitness:
    """Build the fitness registered as ``name`` (see :data:`FITNESSES`).

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the names).
    """
    return FITNESSES.get(name)(settings=settings, device=device, seed=seed)
