"""The label-free trained fitnesses: PIRL's contrastive loss (the paper's) and SimCLR's NT-Xent."""

from __future__ import annotations

from typing import Any

import torch

from autorobust.data.tensors import to_unit_float
from autorobust.methods.csnas.contrastive import MemoryBank, nt_xent_loss, pirl_loss
from autorobust.methods.csnas.fitness._base import FITNESSES
from autorobust.methods.csnas.fitness._trained import TrainedFitness, _batches
from autorobust.models.base import Classifier

__all__ = ["ContrastiveFitness", "SimCLRFitness"]


@FITNESSES.register("contrastive")
class ContrastiveFitness(TrainedFitness):
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
class SimCLRFitness(TrainedFitness):
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
