"""How a candidate architecture is scored during the CSNAS search (lower is better).

Each fitness trains a freshly initialised candidate network for ``architecture.fitness_epochs``
epochs with momentum SGD and reports one value per epoch (for pruning); the last epoch's value is
the fitness.

- :class:`ContrastiveFitness` (the paper's, Eq. (1)-(3)): label-free; it reads only
  ``splits.unlabeled`` (no label, no index into the labelled pool). Value: mean PIRL loss per image
  over the epoch.
- :class:`SimCLRFitness`: label-free; SimCLR's NT-Xent between two views.
- :class:`SupervisedFitness` (the paper's ablation): cross-entropy on the same images *with* their
  observed labels; value: validation error 1 - balanced accuracy on the clean meta split.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autorobust._registry import Registry
from autorobust.data.augment import BatchAugment
from autorobust.data.tensors import Normalization, images_to_tensor, to_unit_float
from autorobust.errors import AutorobustError, ConfigError
from autorobust.methods.csnas.config import ArchitectureConfig
from autorobust.methods.csnas.contrastive import MemoryBank, nt_xent_loss, pirl_loss
from autorobust.models.base import Classifier
from autorobust.train.metrics import classification_metrics
from autorobust.train.trainer import predict

__all__ = [
    "FITNESSES",
    "ContrastiveFitness",
    "Fitness",
    "FitnessResult",
    "ProjectionHead",
    "SimCLRFitness",
    "SupervisedFitness",
    "create_fitness",
]

Report = Callable[[int, float], None]
"""Called after each epoch with (epoch, value); may raise (e.g. ``optuna.TrialPruned``)."""


class ProjectionHead(nn.Sequential):
    """Two-layer MLP, Linear(d_in, hidden) - ReLU - Linear(hidden, p): float (B, d_in) -> (B, p)."""

    def __init__(self, d_in: int, hidden: int, p: int) -> None:
        super().__init__(nn.Linear(d_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, p))


@dataclass(frozen=True)
class FitnessResult:
    """A scored candidate.

    Attributes:
        value: the fitness (the last epoch's value; lower is better).
        history: one value per epoch.
        seconds: wall time of the evaluation.
    """

    value: float
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0


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


class Fitness(ABC):
    """Scores a candidate network; subclasses implement :meth:`_epoch` (and maybe :meth:`_setup`).

    Args:
        settings: the ``architecture`` config section (epochs, batch size, optimiser, views, ...).
        device: where the candidate trains.
        seed: seeds the heads' initialisation, the shuffling and the views.
    """

    name: ClassVar[str]
    uses_labels: ClassVar[bool]
    direction: ClassVar[str] = "minimize"

    def __init__(self, *, settings: ArchitectureConfig, device: torch.device, seed: int) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.seed = seed

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
        started = time.perf_counter()
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
            value=history[-1], history=history, seconds=time.perf_counter() - started
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


FITNESSES: Registry[type[Fitness]] = Registry("fitness")


def create_fitness(
    name: str, *, settings: ArchitectureConfig, device: torch.device, seed: int
) -> Fitness:
    """Build the fitness registered as ``name`` (contrastive, simclr, supervised)."""
    return FITNESSES.get(name)(settings=settings, device=device, seed=seed)


@FITNESSES.register("contrastive")
class ContrastiveFitness(Fitness):
    """PIRL's contrastive loss, Eq. (3), trained and measured on the unlabeled view only.

    Per mini-batch of K images: the encoder f (the network's ``forward_features``) sees the
    originals and M augmented views in one pass; z = g(f(x)), z^t = l(concat_m g(f(x^(m)))); the
    memory bank holds r_i, initialised with normalise(z_i) of the untrained network (one pass
    without gradients) and updated after every step as an exponential moving average. Negatives:
    the other images' M (K - 1) view projections (``negatives: batch``) or drawn bank entries
    (``negatives: bank``, PIRL). Value: the mean of L over the epoch's images.
    """

    name = "contrastive"
    uses_labels = False

    def _setup(self, network: Classifier, splits: Any) -> dict[str, Any]:
        images, normalize = self._unlabeled(splits)
        g, l_head = self._heads(network, self.settings.views * self.settings.projection_dim)
        bank = MemoryBank(
            size=len(images),
            dim=self.settings.projection_dim,
            momentum=self.settings.bank_momentum,
            device=self.device,
        )
        with torch.no_grad():
            network.train()  # batch statistics, as the training steps will see them
            for index in torch.arange(len(images)).split(self.settings.batch_size):
                x = normalize(images[index.to(self.device)])
                bank.fill(index.to(self.device), g(network.forward_features(x)))
        return {
            "modules": [network, g, l_head],
            "network": network,
            "g": g,
            "l": l_head,
            "bank": bank,
            "images": images,
            "normalize": normalize,
            "augment": self._augment(),
        }

    def _epoch(
        self, state: dict[str, Any], optimizer: torch.optim.Optimizer, generator: torch.Generator
    ) -> float:
        s = self.settings
        network, g, l_head, bank = state["network"], state["g"], state["l"], state["bank"]
        images, normalize, augment = state["images"], state["normalize"], state["augment"]
        total, count = 0.0, 0
        for index in _batches(len(images), s.batch_size, generator):
            b = len(index)
            index = index.to(self.device)
            unit = to_unit_float(images[index])
            views = [augment(unit, generator) for _ in range(s.views)]
            x = normalize.standardize(torch.cat([unit, *views]))
            projections = g(network.forward_features(x))  # ((1 + M) B, p)
            z, view_z = projections[:b], projections[b:]
            z_views = l_head(torch.cat(view_z.split(b), dim=1))  # l(concat_m g(f(x^(m))))
            if s.negatives == "batch":
                negatives = view_z  # (M B, p), view m of image j at row m B + j
                own = torch.arange(b, device=self.device).repeat(s.views)
                mask = own[None, :] != torch.arange(b, device=self.device)[:, None]
                bank_anchor = True
            else:
                count_q = min(s.bank_negatives, len(bank) - 1)
                drawn = torch.randint(len(bank), (count_q,), generator=generator).to(self.device)
                negatives = bank[drawn]
                mask = drawn[None, :] != index[:, None]
                bank_anchor = False
            loss = pirl_loss(
                bank[index],
                z,
                z_views,
                negatives,
                tau=s.tau,
                lambda_weight=s.lambda_weight,
                mask=mask,
                bank_anchor=bank_anchor,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bank.update(index, z)
            total += loss.item() * b
            count += b
        return total / count


@FITNESSES.register("simclr")
class SimCLRFitness(Fitness):
    """SimCLR's NT-Xent between two augmented views, on the unlabeled view only (no bank).

    Value: the mean NT-Xent per image over the epoch (temperature ``simclr_tau``).
    """

    name = "simclr"
    uses_labels = False

    def _setup(self, network: Classifier, splits: Any) -> dict[str, Any]:
        images, normalize = self._unlabeled(splits)
        g, _ = self._heads(network, self.settings.projection_dim)
        return {
            "modules": [network, g],
            "network": network,
            "g": g,
            "images": images,
            "normalize": normalize,
            "augment": self._augment(),
        }

    def _epoch(
        self, state: dict[str, Any], optimizer: torch.optim.Optimizer, generator: torch.Generator
    ) -> float:
        s = self.settings
        network, g = state["network"], state["g"]
        images, normalize, augment = state["images"], state["normalize"], state["augment"]
        total, count = 0.0, 0
        for index in _batches(len(images), s.batch_size, generator):
            b = len(index)
            unit = to_unit_float(images[index.to(self.device)])
            x = normalize.standardize(torch.cat([augment(unit, generator) for _ in range(2)]))
            projections = g(network.forward_features(x))
            loss = nt_xent_loss(projections[:b], projections[b:], tau=s.simclr_tau)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * b
            count += b
        return total / count


@FITNESSES.register("supervised")
class SupervisedFitness(Fitness):
    """The supervised ablation: cross-entropy on the unlabeled view's images with their labels.

    Uses the observed (possibly noisy) training labels of ``splits.unlabeled_index`` and the
    network's own head; the views' crop and flip augment the images. Value after each epoch: the
    validation error 1 - balanced accuracy on ``splits.meta``.
    """

    name = "supervised"
    uses_labels = True

    def _setup(self, network: Classifier, splits: Any) -> dict[str, Any]:
        images, normalize = self._unlabeled(splits)
        labels = torch.as_tensor(
            splits.train.labels[splits.unlabeled_index], dtype=torch.int64, device=self.device
        )
        return {
            "modules": [network],
            "network": network,
            "images": images,
            "labels": labels,
            "normalize": normalize,
            "augment": BatchAugment(
                crop_padding=self.settings.view_crop_padding, hflip=self.settings.view_hflip
            ),
            "val_images": images_to_tensor(splits.meta.images, self.device),
            "val_labels": splits.meta.labels,
            "num_classes": splits.num_classes,
        }

    def _epoch(
        self, state: dict[str, Any], optimizer: torch.optim.Optimizer, generator: torch.Generator
    ) -> float:
        network, images, labels = state["network"], state["images"], state["labels"]
        normalize, augment = state["normalize"], state["augment"]
        for index in _batches(len(images), self.settings.batch_size, generator):
            index = index.to(self.device)
            x = normalize.standardize(augment(to_unit_float(images[index]), generator))
            loss = F.cross_entropy(network(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not torch.isfinite(loss):
                return float("nan")
        logits = predict(network, state["val_images"], normalize)
        metrics = classification_metrics(
            state["val_labels"], logits.argmax(1).numpy(), state["num_classes"]
        )
        return 1.0 - float(metrics["balanced_accuracy"])
