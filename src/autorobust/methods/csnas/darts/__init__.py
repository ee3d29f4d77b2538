"""DARTS cells and networks for CSNAS: operations, the genotype encoding, cells, the network."""

from __future__ import annotations

from autorobust.methods.csnas.darts.flops import ModelCost, model_cost
from autorobust.methods.csnas.darts.genotype import (
    DARTS_V2,
    CellStructure,
    Genotype,
    GenotypeError,
    analyze_cell,
    cell_edges,
    edge_count,
    random_genotype,
)
from autorobust.methods.csnas.darts.network import DartsNetwork, darts, reduction_layers
from autorobust.methods.csnas.darts.operations import OPERATION_NAMES, OPERATIONS, create_operation

__all__ = [
    "DARTS_V2",
    "OPERATIONS",
    "OPERATION_NAMES",
    "CellStructure",
    "DartsNetwork",
    "Genotype",
    "GenotypeError",
    "ModelCost",
    "analyze_cell",
    "cell_edges",
    "create_operation",
    "darts",
    "edge_count",
    "model_cost",
    "random_genotype",
    "reduction_layers",
]
