"""Parameter and multiply-add counts of a model (``torch.utils.flop_counter``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ModelCost", "model_cost"]


@dataclass(frozen=True)
class ModelCost:
    """Size and compute of a model for one image.

    Attributes:
        params: trainable parameters, the auxiliary head excluded (as NAS papers report).
        multiply_adds: multiply-accumulate operations of one eval-mode forward pass of one image:
            half of the FLOPs that :class:`~torch.utils.flop_counter.FlopCounterMode` counts for
            convolutions and matrix products (pooling, batch norm and additions are not counted,
            the usual convention of "mult-adds" tables).
    """

    params: int
    multiply_adds: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def model_cost(model: nn.Module, image_shape: tuple[int, int, int]) -> ModelCost:
    """Count parameters and multiply-adds of ``model`` for one image of ``image_shape`` (C, H, W).

    The model is run once in eval mode on zeros, on the device of its parameters, without
    gradients; its training mode is restored afterwards.
    """
    params = sum(
        p.numel()
        for name, p in model.named_parameters()
        if p.requires_grad and not name.startswith("auxiliary_head.")
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, *image_shape, device=device))
    finally:
        model.train(was_training)
    return ModelCost(params=int(params), multiply_adds=int(counter.get_total_flops() // 2))
