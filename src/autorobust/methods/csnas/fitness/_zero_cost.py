"""Training-free fitnesses: a score of the untrained candidate, averaged over initialisations.

A zero-cost score (Mellor et al. 2021; Abdelfattah et al. 2021) needs one or a few forward /
backward passes of the untrained network and no label. The published scores are higher-is-better;
the search minimises, so a :class:`ZeroCostFitness` reports ``value = -score``.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from autorobust.data.tensors import Normalization, images_to_tensor
from autorobust.errors import AutorobustError, ConfigError
from autorobust.methods.csnas.fitness._base import Fitness, FitnessResult, Report
from autorobust.models.base import Classifier

__all__ = ["ZeroCostFitness", "preserved_buffers", "reinitialise"]


def reinitialise(network: nn.Module, seed: int) -> None:
    """Draw fresh initial weights for ``network`` in place, from ``seed`` alone.

    Every submodule with a ``reset_parameters`` method (convolutions, linear layers, batch norm:
    weights and running statistics) redraws them as at construction; torch's global generator is
    left as it was.
    """
    cuda = sorted({p.device for p in network.parameters() if p.device.type == "cuda"}, key=str)
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for module in network.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


@contextmanager
def preserved_buffers(network: nn.Module, *, training: bool) -> Iterator[None]:
    """Run the block with ``network`` in training mode ``training``; restore its mode and buffers.

    A forward pass in training mode updates batch norm's running statistics; a score must not
    leave such a trace on the candidate.
    """
    was_training = network.training
    saved = {name: buffer.clone() for name, buffer in network.named_buffers()}
    network.train(training)
    try:
        yield
    finally:
        network.train(was_training)
        with torch.no_grad():
            for name, buffer in network.named_buffers():
                buffer.copy_(saved[name])


def _init_seed(seed: int, init: int) -> int:
    return int(np.random.SeedSequence([seed, init, 15]).generate_state(1)[0])


class ZeroCostFitness(Fitness):
    """A training-free, label-free score; ``value = -(mean of the score over initialisations)``.

    The first initialisation is the candidate as given; initialisations 1 .. R-1 (R =
    ``architecture.score_inits``) are redrawn by :func:`reinitialise` from the fitness seed. The
    data-dependent scores read ``architecture.score_batch`` images of ``splits.unlabeled`` (the
    same images for every initialisation and every candidate of a search).
    """

    uses_labels = False
    trains = False

    def evaluate(
        self, network: Classifier, splits: Any, *, report: Report | None = None
    ) -> FitnessResult:
        """Score ``network`` (its weights are redrawn in place when R > 1); see the class."""
        started, cpu_started = time.perf_counter(), time.process_time()
        network = network.to(self.device)
        batch = self._batch(splits)
        scores = []
        for init in range(self.settings.score_inits):
            if init > 0:
                reinitialise(network, _init_seed(self.seed, init))
            scores.append(self.score(network, batch))
        value = -float(np.mean(scores))
        if not np.isfinite(value):
            raise AutorobustError(
                f"{self.name} fitness is not finite (scores {scores}); {self._non_finite_hint}"
            )
        if report is not None:
            report(0, value)
        return FitnessResult(
            value=value,
            history=[value],
            seconds=time.perf_counter() - started,
            cpu_seconds=time.process_time() - cpu_started,
        )

    _non_finite_hint = "the candidate's output does not depend on its input"

    def _batch(self, splits: Any) -> Tensor:
        """float (B, C, H, W): ``score_batch`` standardised unlabeled images, drawn by the seed."""
        images = splits.unlabeled
        if len(images) < 2:
            raise ConfigError(
                f"{self.name} fitness needs at least 2 unlabeled images, got {len(images)}; "
                "raise data.unlabeled_fraction"
            )
        generator = np.random.default_rng([self.seed, 15])
        size = min(self.settings.score_batch, len(images))
        chosen = np.sort(generator.choice(len(images), size=size, replace=False))
        normalize = Normalization.from_images(images)
        return normalize(images_to_tensor(images[chosen], self.device))

    @abstractmethod
    def score(self, network: nn.Module, batch: Tensor) -> float:
        """The published score (higher is better) of ``network`` as it is initialised now.

        Args:
            network: the candidate; it must be left with its weights and mode unchanged.
            batch: float (B, C, H, W) standardised images (a data-free score uses only the shape).
        """
