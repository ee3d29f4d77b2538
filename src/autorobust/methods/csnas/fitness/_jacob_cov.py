"""Jacobian covariance (Mellor et al., "Neural architecture search without training", arXiv v1).

For each image x_n of a batch, J_n = d(sum of the logits of x_n)/d x_n, flattened; Sigma is the
(B, B) correlation matrix of the J_n and lambda_1 .. lambda_B its eigenvalues. The score is
-sum_i [ln(lambda_i + k) + 1 / (lambda_i + k)] with k = 1e-5: highest when the Jacobians of
different images are uncorrelated (every lambda = 1), i.e. the network treats them differently.
Batch norm runs in training mode (batch statistics), as in the authors' and Abdelfattah et al.'s
code.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from autorobust.methods.csnas.fitness._base import FITNESSES
from autorobust.methods.csnas.fitness._zero_cost import ZeroCostFitness, preserved_buffers

__all__ = ["JacobianCovarianceFitness", "input_jacobians", "jacobian_covariance_score"]

K_REGULARISER = 1e-5


def input_jacobians(network: nn.Module, batch: Tensor) -> Tensor:
    """float (B, D): row n = d(sum of all outputs)/d x_n for ``batch`` (B, ...), D = x_n.numel().

    One backward pass of the sum of ``network(batch)`` in its current mode; parameter gradients
    are not kept.
    """
    x = batch.detach().clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(network(x).sum(), x)
    return gradient.flatten(1)


def jacobian_covariance_score(network: nn.Module, batch: Tensor) -> float:
    """-sum_i [ln(lambda_i + k) + 1/(lambda_i + k)] of the correlation of :func:`input_jacobians`.

    Returns nan when some image's Jacobian is constant (its correlation is undefined).
    """
    jacobians = input_jacobians(network, batch).to(torch.float64).cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.corrcoef(jacobians)
    if not np.all(np.isfinite(correlation)):
        return float("nan")
    # A correlation matrix is positive semi-definite: negative eigenvalues are rounding.
    eigenvalues = np.clip(np.linalg.eigvalsh(correlation), 0.0, None)
    shifted = eigenvalues + K_REGULARISER
    return float(-np.sum(np.log(shifted) + 1.0 / shifted))


@FITNESSES.register("jacob_cov")
class JacobianCovarianceFitness(ZeroCostFitness):
    """Jacobian covariance on ``architecture.score_batch`` unlabeled images; value = -score."""

    name = "jacob_cov"
    _non_finite_hint = "an image's input gradient is constant (correlation undefined)"

    def score(self, network: nn.Module, batch: Tensor) -> float:
        """The score of ``network`` on ``batch`` (B, C, H, W), batch norm in training mode."""
        with preserved_buffers(network, training=True):
            return jacobian_covariance_score(network, batch)
