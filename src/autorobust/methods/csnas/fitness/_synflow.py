"""synflow (Tanaka et al., NeurIPS 2020; a zero-cost proxy in Abdelfattah et al., ICLR 2021).

The synaptic flow of a network: replace every weight by its absolute value, feed an all-ones
input (no data), let R be the sum of the outputs; the score of a weight is |theta * dR/dtheta|
and the network's score S is its sum over the weights of every convolution and linear layer (as in
Abdelfattah et al.'s code; batch-norm affine parameters are not counted). Computed in float64 on a
copy in eval mode, whose fresh running statistics make batch norm the identity up to
1 / sqrt(1 + eps): no batch statistics of a constant input, and no float32 overflow of the
product over layers. S spans many orders of magnitude, so the fitness reports -ln S.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from autorobust.methods.csnas.fitness._base import FITNESSES
from autorobust.methods.csnas.fitness._zero_cost import ZeroCostFitness

__all__ = ["SynflowFitness", "synflow_score"]


def synflow_score(network: nn.Module, input_shape: tuple[int, ...]) -> float:
    """S = sum over conv / linear weights of |theta * dR/dtheta| (see the module docstring).

    Args:
        network: left unchanged (the score is computed on a float64 copy).
        input_shape: one input's shape, e.g. (C, H, W); the input is ones (1, *input_shape).

    Returns:
        S >= 0 (higher is better); inf if float64 overflows.
    """
    device = next(network.parameters()).device
    flow = copy.deepcopy(network).to(torch.float64).eval()
    with torch.no_grad():
        for tensor in flow.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    layers = [m for m in flow.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    flow.zero_grad(set_to_none=True)
    flow(torch.ones(1, *input_shape, dtype=torch.float64, device=device)).sum().backward()
    total = 0.0
    with torch.no_grad():
        for layer in layers:
            if layer.weight.grad is not None:
                total += float((layer.weight * layer.weight.grad).abs().sum())
    return total


@FITNESSES.register("synflow")
class SynflowFitness(ZeroCostFitness):
    """synflow; value = -mean over initialisations of ln S. Reads no image (only their shape)."""

    name = "synflow"
    _non_finite_hint = "S overflowed float64 or is 0; score a smaller search network"

    def score(self, network: nn.Module, batch: Tensor) -> float:
        """ln S of ``network`` for inputs shaped like one image of ``batch``."""
        value = synflow_score(network, tuple(batch.shape[1:]))
        return math.log(value) if 0 < value < math.inf else -math.inf
