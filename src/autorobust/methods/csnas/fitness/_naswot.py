"""NASWOT (Mellor et al., ICML 2021): how differently the untrained network's ReLUs split a batch.

Every ReLU unit (one element of a ReLU's input map) is active or not for each image, so image n
gets a binary code c_n over all N_A units of the network. K_ij = the number of units on which c_i
and c_j agree = c_i . c_j + (1 - c_i) . (1 - c_j) = N_A - Hamming(c_i, c_j). The score is
log |det K|: a network whose units separate the images has codes far apart, K close to diagonal
and a large determinant. As in the authors' code, the codes are those of every ``nn.ReLU`` module
(the input map > 0), with batch norm in training mode (batch statistics).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from autorobust.methods.csnas.fitness._base import FITNESSES
from autorobust.methods.csnas.fitness._zero_cost import ZeroCostFitness, preserved_buffers

__all__ = ["NaswotFitness", "activation_code_kernel", "naswot_score"]


def activation_code_kernel(network: nn.Module, batch: Tensor) -> Tensor:
    """K (B, B) float64: K_ij = units of all ``nn.ReLU`` modules on which images i and j agree.

    Runs ``network`` once on ``batch`` (B, ...) without gradients, in its current mode.

    Raises:
        ValueError: ``network`` has no ``nn.ReLU`` module.
    """
    # With signs s = 2c - 1, s_i . s_j = agreements - disagreements, so K = (S S^T + N_A) / 2:
    # one product instead of two. A float32 sum of +-1 is exact below 2^24 units per ReLU.
    signs_product = torch.zeros(len(batch), len(batch), dtype=torch.float64, device=batch.device)
    units = 0

    def count(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal units
        active = (inputs[0] > 0).flatten(1)  # (B, units of this ReLU)
        signs = active.to(torch.float32) * 2 - 1
        signs_product.add_((signs @ signs.T).to(torch.float64))
        units += active.shape[1]

    relus = [m for m in network.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"NASWOT needs ReLU modules; {type(network).__name__} has none")
    handles = [m.register_forward_hook(count) for m in relus]
    try:
        with torch.no_grad():
            network(batch)
    finally:
        for handle in handles:
            handle.remove()
    return (signs_product + units) / 2


def naswot_score(network: nn.Module, batch: Tensor) -> float:
    """log |det K| of :func:`activation_code_kernel` (higher is better); -inf if K is singular."""
    return float(torch.linalg.slogdet(activation_code_kernel(network, batch)).logabsdet)


@FITNESSES.register("naswot")
class NaswotFitness(ZeroCostFitness):
    """NASWOT on ``architecture.score_batch`` unlabeled images; value = -mean log |det K|.

    The candidate is scored in training mode (batch statistics), as Mellor et al. do; its mode and
    running statistics are restored afterwards.
    """

    name = "naswot"
    _non_finite_hint = (
        "K is singular: two images share every activation code (duplicate images?); "
        "change architecture.score_batch"
    )

    def score(self, network: nn.Module, batch: Tensor) -> float:
        """log |det K| of ``network`` on ``batch`` (B, C, H, W), batch norm in training mode."""
        with preserved_buffers(network, training=True):
            return naswot_score(network, batch)
