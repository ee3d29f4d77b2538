"""Fitnesses that train the candidate first: the loop they share (:class:`TrainedFitness`).

Each trains a freshly initialised candidate network for ``architecture.fitness_epochs`` epochs with
momentum SGD and reports one value per epoch (for pruning); the last epoch's value is the fitness.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from autorobust.data.augment import BatchAugment
from autorobust.data.tensors import Normalization, images_to_tensor
from autorobust.errors import AutorobustError, ConfigError
from autorobust.methods.csnas.fitness._base import Fitness, FitnessResult, Report
from autorobust.models.base import Classifier

__all__ = ["ProjectionHead", "TrainedFitness"]


class ProjectionHead(nn.Sequential):
    """Two-layer MLP, Linear(d_in, hidden) - ReLU - Linear(hidden, p): float (B, d_in) -> (B, p)."""

    def __init__(self, d_in: int, hidden: int, p: int) -> None:
        super().__init__(nn.Linear(d_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, p))


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    state = int(np.random.SeedSequence([seed, epoch, 6]).generate_state(1)[0])
    return torch.Generator().manual_seed(state)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """A shuffled split of range(n) into max(1, n // batch_size) batches of near-equal size.

    Spreading the remainder, instead of a last short batch, keeps every batch >= batch_size
    images, so no contrastive batch is left without negatives.
    """
    order = torch.randperm(n, generator=generator)
    return list(torch.tensor_split(order, max(1, n // batch_size)))


class TrainedFitness(Fitness):
    """Trains the candidate, then scores it; subclasses implement :meth:`_setup` and :meth:`_epoch`.

    Args:
        settings: the ``architecture`` config section (epochs, batch size, optimiser, views, ...).
        device: where the candidate trains.
        seed: seeds the heads' initialisation, the shuffling and the views.
    """

    def evaluate(
        self, network: Classifier, splits: Any, *, report: Report | None = None
    ) -> FitnessResult:
        """Train ``network`` (in place) for ``settings.fitness_epochs`` epochs and score it.

        Args:
            network: a freshly initialised candidate (any :class:`Classifier`).
            splits: a :class:`~autorobust.data.splits.Splits`; the label-free fitnesses read only
                its ``unlabeled`` attribute.
            report: called with (epoch, value) after every epoch.

        Raises:
            AutorobustError: the training diverged (a non-finite loss).
        """
        started, cpu_started = time.perf_counter(), time.process_time()
        network = network.to(self.device)
        history: list[float] = []
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            state = self._setup(network, splits)
            parameters = [p for module in state["modules"] for p in module.parameters()]
            optimizer = torch.optim.SGD(
                parameters,
                lr=self.settings.lr,
                momentum=self.settings.momentum,
                weight_decay=self.settings.weight_decay,
            )
            for epoch in range(self.settings.fitness_epochs):
                for module in state["modules"]:
                    module.train()
                value = self._epoch(state, optimizer, _epoch_generator(self.seed, epoch))
                if not np.isfinite(value):
                    raise AutorobustError(
                        f"{self.name} fitness diverged at epoch {epoch} (value {value}); "
                        "lower architecture.lr"
                    )
                history.append(value)
                if report is not None:
                    report(epoch, value)
        return FitnessResult(
            value=history[-1],
            history=history,
            seconds=time.perf_counter() - started,
            cpu_seconds=time.process_time() - cpu_started,
        )

    def _augment(self) -> BatchAugment:
        s = self.settings
        return BatchAugment(
            crop_padding=s.view_crop_padding,
            hflip=s.view_hflip,
            jitter=s.view_jitter,
            grayscale_p=s.view_grayscale_p,
        )

    def _heads(self, network: Classifier, d_in_views: int) -> tuple[nn.Module, nn.Module]:
        p = self.settings.projection_dim
        hidden = self.settings.projection_hidden or network.feature_dim
        g = ProjectionHead(network.feature_dim, hidden, p).to(self.device)
        l_head = ProjectionHead(d_in_views, hidden, p).to(self.device)
        return g, l_head

    def _unlabeled(self, splits: Any) -> tuple[Tensor, Normalization]:
        images = splits.unlabeled
        if len(images) < 2:
            raise ConfigError(
                f"{self.name} fitness needs at least 2 unlabeled images, got {len(images)}; "
                "raise data.unlabeled_fraction"
            )
        return images_to_tensor(images, self.device), Normalization.from_images(images)

    @abstractmethod
    def _setup(self, network: Classifier, splits: Any) -> dict[str, Any]:
        """Build heads and tensors; return a state dict with ``"modules"`` to optimise."""

    @abstractmethod
    def _epoch(
        self, state: dict[str, Any], optimizer: torch.optim.Optimizer, generator: torch.Generator
    ) -> float:
        """Train one epoch; return its value."""
