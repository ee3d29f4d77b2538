"""A network of stacked DARTS cells (Liu et al. 2019, §3; CSNAS appendix B), model ``"darts"``.

A 3x3 convolution stem with ``stem_multiplier * C`` channels feeds ``layers`` cells; the cells at
depth ``layers // 3`` and ``2 * layers // 3`` are reduction cells (half resolution, double
channels), the others normal cells. Cell k reads the outputs of cells k-2 and k-1 (the stem for
k < 2). Global average pooling and the linear ``head`` follow. Optional: drop-path on every
non-identity edge (probability :attr:`DartsNetwork.drop_path_prob`, which the DARTS trainer raises
linearly over training) and an auxiliary classifier reading the cell at ``2 * layers // 3``.

A cell whose output no later cell reads (possible when cells skip one of their inputs, see
:mod:`autorobust.methods.csnas.darts.genotype`) is not built: it could not influence the logits,
and its parameters would never receive a gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from autorobust.errors import ConfigError
from autorobust.methods.csnas.darts.cell import Cell
from autorobust.methods.csnas.darts.genotype import DARTS_V2, Genotype
from autorobust.models.base import Classifier, _check_positive_int
from autorobust.models.registry import register_model

__all__ = ["AuxiliaryHead", "DartsNetwork", "darts", "reduction_layers"]


def reduction_layers(layers: int) -> tuple[int, int]:
    """Indices of the two reduction cells: 1/3 and 2/3 of the depth (``layers >= 2``)."""
    return layers // 3, 2 * layers // 3


class AuxiliaryHead(nn.Module):
    """DARTS' auxiliary classifier: ReLU, pool to 2x2, 1x1 conv to 128, 2x2 conv to 768, linear.

    DARTS pools 8x8 maps with a 5x5 window and stride 3; adaptive pooling to 2x2 gives the same
    output for 8x8 and also works for Fashion-MNIST's 7x7 and the digits' 2x2 maps.
    """

    def __init__(self, c_in: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(c_in, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """float (B, c_in, H, W) -> logits (B, num_classes)."""
        return self.classifier(self.features(x).flatten(1))


class DartsNetwork(Classifier):
    """Stacked cells of a :class:`Genotype`; see the module docstring for the layout.

    Intermediate layers: ``stem`` and ``cells.<k>`` for every built cell (outputs pooled to
    (B, channels)).

    Args:
        num_classes: K >= 2.
        in_channels: image channels.
        genotype: the cells (a :class:`Genotype`, a dict, or a path to a genotype JSON file);
            default the DARTS cell :data:`~autorobust.methods.csnas.darts.genotype.DARTS_V2`.
        layers: number of cells (>= 2): 8 for the search size, 20 for the evaluation size.
        channels: C, initial channels of the intermediate nodes (doubled at each reduction).
        stem_multiplier: the stem has ``stem_multiplier * C`` channels (DARTS: 3).
        auxiliary: build the auxiliary head at 2/3 depth (used by
            :meth:`forward_with_auxiliary` in training mode).
        drop_path: initial drop-path probability in [0, 1).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        genotype: Genotype | Mapping[str, Any] | str | Path = DARTS_V2,
        layers: int = 8,
        channels: int = 16,
        stem_multiplier: int = 3,
        auxiliary: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        where = "model 'darts'"
        genotype = Genotype.coerce(genotype)
        layers = _check_positive_int(layers, "layers", 2, where)
        channels = _check_positive_int(channels, "channels", 1, where)
        stem_multiplier = _check_positive_int(stem_multiplier, "stem_multiplier", 1, where)
        if not 0.0 <= drop_path < 1.0:
            raise ConfigError(f"{where}: drop_path must lie in [0, 1), got {drop_path!r}")
        reductions = reduction_layers(layers)
        aux_index = reductions[1]
        structures = [
            genotype.reduce_structure if k in reductions else genotype.normal_structure
            for k in range(layers)
        ]
        # Which cell outputs something downstream reads, walking back from the last cell.
        needed = {layers - 1} | ({aux_index} if auxiliary else set())
        for k in range(layers - 1, -1, -1):
            if k in needed:
                needed |= {k - 2 + i for i in structures[k].used_inputs if k - 2 + i >= 0}

        stem_channels = stem_multiplier * channels
        c_prev_prev = c_prev = stem_channels
        c_cell, reduction_prev = channels, False
        cells: dict[str, Cell] = {}
        dims = {"stem": stem_channels}
        aux_channels = 0
        for k in range(layers):
            reduction = k in reductions
            c_cell = 2 * c_cell if reduction else c_cell
            out_channels = len(structures[k].live_nodes) * c_cell
            if k in needed:
                cells[str(k)] = Cell(
                    structures[k],
                    c_prev_prev=c_prev_prev,
                    c_prev=c_prev,
                    channels=c_cell,
                    reduction=reduction,
                    reduction_prev=reduction_prev,
                )
                dims[f"cells.{k}"] = out_channels
            if k == aux_index:
                aux_channels = out_channels
            c_prev_prev, c_prev, reduction_prev = c_prev, out_channels, reduction

        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            feature_dim=c_prev,
            intermediate_dims=dims,
        )
        self.genotype = genotype
        self.layers = layers
        self.channels = channels
        self.aux_index = aux_index
        self.drop_path_prob = float(drop_path)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
        )
        self.cells = nn.ModuleDict(cells)
        self.auxiliary_head = AuxiliaryHead(aux_channels, num_classes) if auxiliary else None
        self.head = nn.Linear(c_prev, num_classes)

    def _backbone(self, x: Tensor, *, want_aux: bool) -> tuple[Tensor, Tensor | None]:
        s0 = s1 = self.stem(x)
        aux_map = None
        cells = dict(self.cells.items())
        for k in range(self.layers):
            cell = cells.get(str(k))
            out = None if cell is None else cell(s0, s1, self.drop_path_prob)
            if want_aux and k == self.aux_index:
                aux_map = out
            s0, s1 = s1, out
        return s1.mean(dim=(2, 3)), aux_map

    def forward_features(self, x: Tensor) -> Tensor:
        """Images float (B, C, H, W) -> pooled last-cell features float (B, feature_dim)."""
        return self._backbone(x, want_aux=False)[0]

    def forward_head(self, features: Tensor) -> Tensor:
        """Features float (B, feature_dim) -> logits float (B, num_classes)."""
        return self.head(features)

    def forward_with_auxiliary(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Logits (B, K) and, in training mode with an auxiliary head, its logits (B, K)."""
        aux_head = self.auxiliary_head if self.training else None
        features, aux_map = self._backbone(x, want_aux=aux_head is not None)
        aux_logits = None if aux_head is None else aux_head(aux_map)
        return self.forward_head(features), aux_logits


@register_model("darts")
def darts(
    *,
    num_classes: int,
    in_channels: int,
    genotype: Mapping[str, Any] | str | None = None,
    layers: int = 8,
    channels: int = 16,
    stem_multiplier: int = 3,
    auxiliary: bool = False,
    drop_path: float = 0.0,
) -> DartsNetwork:
    """A :class:`DartsNetwork`; ``genotype`` is a genotype JSON path or its dict (as in YAML).

    Without a genotype the network uses :data:`~autorobust.methods.csnas.darts.genotype.DARTS_V2`.
    """
    return DartsNetwork(
        num_classes=num_classes,
        in_channels=in_channels,
        genotype=DARTS_V2 if genotype is None else genotype,
        layers=layers,
        channels=channels,
        stem_multiplier=stem_multiplier,
        auxiliary=auxiliary,
        drop_path=drop_path,
    )
