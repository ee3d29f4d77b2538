"""One DARTS cell built from a :class:`~autorobust.methods.csnas.darts.genotype.CellStructure`.

Only the live part of the cell DAG is built (see the zero-node rule in
:mod:`autorobust.methods.csnas.darts.genotype`): ``none`` edges, edges leaving zero nodes and the
pre-processing of unread inputs do not exist, so every parameter of the cell reaches its output.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from autorobust.methods.csnas.darts.genotype import CellStructure
from autorobust.methods.csnas.darts.operations import FactorizedReduce, ReLUConvBN, create_operation

__all__ = ["Cell", "drop_path"]


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Zero whole samples of a branch with probability ``drop_prob``, rescaling the rest.

    DARTS' regularisation (from FractalNet / NASNet): each sample's branch output is kept with
    probability 1 - p and divided by 1 - p, so its expectation is unchanged. Draws B Bernoulli
    numbers from torch's global generator (the trainer seeds it per epoch).

    Args:
        x: float (B, C, H, W).
        drop_prob: p in [0, 1).
    """
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class Cell(nn.Module):
    """A normal or reduction cell: node j = sum over live edges of o_(i,j)(x_i), output = concat.

    Args:
        structure: the live nodes and edges of the cell vector.
        c_prev_prev: channels of input node 0 (c_{k-2}).
        c_prev: channels of input node 1 (c_{k-1}).
        channels: C, channels of every intermediate node.
        reduction: halve the resolution (stride 2 on the edges leaving the input nodes).
        reduction_prev: the previous cell reduced, so input 0 has twice the resolution of input 1
            and is brought down by a factorized reduction.
    """

    def __init__(
        self,
        structure: CellStructure,
        *,
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.structure = structure
        self.reduction = reduction
        self.channels = channels
        self.preprocess = nn.ModuleDict()
        if 0 in structure.used_inputs:
            self.preprocess["0"] = (
                FactorizedReduce(c_prev_prev, channels)
                if reduction_prev
                else ReLUConvBN(c_prev_prev, channels, 1, 1, 0)
            )
        if 1 in structure.used_inputs:
            self.preprocess["1"] = ReLUConvBN(c_prev, channels, 1, 1, 0)
        self.edges = nn.ModuleDict()
        for i, j, op in structure.live_edges:
            stride = 2 if reduction and i < 2 else 1
            self.edges[f"{i}_{j}"] = create_operation(op, channels=channels, stride=stride)
        self.out_channels = len(structure.live_nodes) * channels

    def forward(self, s0: Tensor | None, s1: Tensor | None, drop_prob: float = 0.0) -> Tensor:
        """Cell output (B, len(live_nodes) * C, H', W') from the two previous cells' outputs.

        Args:
            s0: output of cell k-2, (B, c_prev_prev, 2H or H, ...); may be None if input 0 is
                unused.
            s1: output of cell k-1, (B, c_prev, H, W); may be None if input 1 is unused.
            drop_prob: drop-path probability for every non-identity edge (training mode only).
        """
        states: dict[int, Tensor] = {}
        for index, state in ((0, s0), (1, s1)):
            if str(index) in self.preprocess:
                states[index] = self.preprocess[str(index)](state)
        for i, j, _ in self.structure.live_edges:
            op = self.edges[f"{i}_{j}"]
            h = op(states[i])
            if self.training and drop_prob > 0 and not isinstance(op, nn.Identity):
                h = drop_path(h, drop_prob)
            states[j] = h if j not in states else states[j] + h
        return torch.cat([states[j] for j in self.structure.live_nodes], dim=1)
