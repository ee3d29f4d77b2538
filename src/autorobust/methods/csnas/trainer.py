"""Training method ``darts``: the DARTS / CSNAS evaluation recipe (CSNAS appendix B).

Plain ERM plus three regularisers of the final training of a searched cell: the auxiliary head's
loss at 2/3 depth weighted by ``architecture.auxiliary_weight`` (0.4), drop-path whose probability
rises linearly from 0 to ``architecture.drop_path`` (0.2) over the epochs, and gradient-norm
clipping at ``architecture.grad_clip`` (5). Select it with ``method: darts`` and
``model: {name: darts, ...}``; cutout comes from ``train.augment.cutout``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from autorobust.errors import ConfigError
from autorobust.methods.csnas.config import ArchitectureConfig
from autorobust.methods.csnas.darts.flops import model_cost
from autorobust.methods.csnas.darts.network import DartsNetwork
from autorobust.train.registry import register_trainer
from autorobust.train.trainer import LabeledImages, Trainer

__all__ = ["DartsTrainer"]


class DartsTrainer(Trainer):
    """:class:`~autorobust.train.trainer.Trainer` with auxiliary loss, drop-path and clipping.

    Args:
        architecture: the ``architecture`` config section (drop_path, auxiliary_weight,
            grad_clip).
        **kwargs: the :class:`Trainer` arguments; ``model`` must be a :class:`DartsNetwork`.
    """

    def __init__(self, *, architecture: ArchitectureConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.architecture = architecture

    def on_fit_start(self) -> None:
        if not isinstance(self.model, DartsNetwork):
            raise ConfigError(
                f"method 'darts' needs model 'darts', got {type(self.model).__name__}"
            )
        if self.architecture.auxiliary_weight > 0 and self.model.auxiliary_head is None:
            raise ConfigError(
                "architecture.auxiliary_weight > 0 needs model option auxiliary: true "
                "(or set architecture.auxiliary_weight: 0)"
            )
        self._steps_per_epoch = math.ceil(len(self.train_images) / self.settings.batch_size)

    def training_step(
        self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, step: int
    ) -> torch.Tensor:
        """One SGD step on loss(main) + auxiliary_weight * loss(auxiliary); returns the main loss.

        The drop-path probability of epoch e is ``drop_path * e / epochs`` (DARTS' schedule).
        """
        model: DartsNetwork = self.model  # type: ignore[assignment]
        epoch = step // self._steps_per_epoch
        model.drop_path_prob = self.architecture.drop_path * epoch / self.settings.epochs
        self.optimizer.zero_grad(set_to_none=True)
        logits, aux_logits = model.forward_with_auxiliary(x)
        loss = self.loss(logits, y)
        total = loss
        if aux_logits is not None and self.architecture.auxiliary_weight > 0:
            total = loss + self.architecture.auxiliary_weight * self.loss(aux_logits, y)
        total.backward()
        if self.architecture.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.architecture.grad_clip)
        self.optimizer.step()
        return loss.detach()

    def extra_metrics(self, train: LabeledImages) -> dict[str, Any]:
        """``{"params", "multiply_adds", "genotype"}`` of the trained network (one image)."""
        model: DartsNetwork = self.model  # type: ignore[assignment]
        _, channels, height, width = self.train_images.shape
        cost = model_cost(model, (channels, height, width))
        return {**cost.to_dict(), "genotype": model.genotype.to_dict()}


@register_trainer("darts")
def _build_darts(config: Any, splits: Any, **trainer_kwargs: Any) -> Trainer:
    return DartsTrainer(architecture=config.architecture, **trainer_kwargs)
