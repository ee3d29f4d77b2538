"""DARTS operations, the CSNAS genotype encoding, cells and networks (paper 000, §III-A)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autorobust.errors import ConfigError
from autorobust.methods.csnas.darts import (
    DARTS_V2,
    OPERATION_NAMES,
    DartsNetwork,
    Genotype,
    GenotypeError,
    analyze_cell,
    cell_edges,
    create_operation,
    edge_count,
    model_cost,
)
from autorobust.models import create_model


def _vector(nodes: int, rng: np.random.Generator) -> tuple[str, ...]:
    return tuple(OPERATION_NAMES[k] for k in rng.integers(8, size=edge_count(nodes)))


def test_encoding_lengths_are_the_papers() -> None:
    assert edge_count(4) == 14 and edge_count(5) == 20
    assert cell_edges(2) == [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]


@pytest.mark.parametrize("name", OPERATION_NAMES)
@pytest.mark.parametrize("size", [7, 8])
def test_every_operation_keeps_channels_and_halves_with_stride_2(name: str, size: int) -> None:
    x = torch.randn(2, 4, size, size)
    assert create_operation(name, channels=4, stride=1)(x).shape == (2, 4, size, size)
    half = (size + 1) // 2
    assert create_operation(name, channels=4, stride=2)(x).shape == (2, 4, half, half)


@pytest.mark.parametrize("nodes", [4, 5])
@pytest.mark.parametrize("seed", range(3))
def test_random_vectors_build_networks_whose_parameters_all_get_gradients(
    nodes: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    normal, reduce = _vector(nodes, rng), _vector(nodes, rng)
    genotype = Genotype(normal=normal, reduce=reduce, nodes=nodes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DartsNetwork(
            num_classes=3, in_channels=1, genotype=genotype, layers=3, channels=4, auxiliary=True
        )
    logits, aux = model.forward_with_auxiliary(torch.randn(4, 1, 8, 8))
    assert logits.shape == (4, 3) and aux is not None and aux.shape == (4, 3)
    (logits.sum() + aux.sum()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # Without the auxiliary head, plain forward reaches every parameter as well.
    plain = DartsNetwork(num_classes=3, in_channels=1, genotype=genotype, layers=3, channels=2)
    plain(torch.randn(2, 1, 7, 7)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in plain.parameters())


def test_a_node_fed_only_by_none_is_zero_and_dropped_from_the_output() -> None:
    nodes = 2  # edges (0,2) (1,2) (0,3) (1,3) (2,3)
    cell = analyze_cell(["none", "none", "sep_conv_3x3", "none", "skip_connect"], nodes)
    assert cell.live_nodes == (3,)  # node 2 is zero, so the skip from it is not built either
    assert cell.live_edges == ((0, 3, "sep_conv_3x3"),)
    assert cell.used_inputs == frozenset({0})
    genotype = Genotype(normal=cell.ops, reduce=cell.ops, nodes=nodes)
    model = DartsNetwork(num_classes=2, in_channels=1, genotype=genotype, layers=3, channels=4)
    # Every cell reads only c_{k-2}: cell 1's output is read by nobody, so it is not built.
    assert sorted(model.cells) == ["0", "2"]
    assert model.intermediate_dims["cells.2"] == 1 * 16  # one live node; C doubled twice
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 2)


def test_invalid_genotypes_are_rejected_with_the_reason(tmp_path: Path) -> None:
    good = list(DARTS_V2.normal)
    with pytest.raises(GenotypeError, match="no path from its inputs"):
        Genotype(normal=["none"] * 14, reduce=good, nodes=4)
    with pytest.raises(GenotypeError, match=r"normal\[3\] \(edge 1->3\).*'conv_7x7'"):
        Genotype(normal=[*good[:3], "conv_7x7", *good[4:]], reduce=good, nodes=4)
    with pytest.raises(GenotypeError, match=r"must have 20 operations for nodes=5.*got 14"):
        Genotype(normal=good, reduce=good, nodes=5)
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"normal": good, "reduce": good[:-1]}))
    with pytest.raises(GenotypeError, match=r"g\.json: reduce must have 14 operations"):
        Genotype.load(path)
    path.write_text("__import__('os').system('true')")
    with pytest.raises(GenotypeError, match="not a JSON file"):
        Genotype.load(path)
    assert issubclass(GenotypeError, ConfigError)


def test_json_round_trip_and_model_option_accepts_a_path(tmp_path: Path) -> None:
    path = DARTS_V2.save(tmp_path / "best_genotype.json")
    loaded = Genotype.load(path)
    assert loaded == DARTS_V2 and loaded.nodes == 4
    model = create_model(
        "darts", num_classes=10, in_channels=1, genotype=str(path), layers=3, channels=4
    )
    assert model.genotype == DARTS_V2 and model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_cost_counts_parameters_and_multiply_adds() -> None:
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    cost = model_cost(linear, (3, 2, 2))
    assert cost.params == 12 * 5 + 5 and cost.multiply_adds == 12 * 5
    model = DartsNetwork(num_classes=10, in_channels=1, layers=3, channels=4, auxiliary=True)
    with_aux = sum(p.numel() for p in model.parameters())
    cost = model_cost(model, (1, 8, 8))
    assert cost.params == with_aux - sum(p.numel() for p in model.auxiliary_head.parameters())
    assert cost.multiply_adds > 0 and model.training


def test_reduction_cells_sit_at_one_and_two_thirds_of_the_depth() -> None:
    model = DartsNetwork(num_classes=2, in_channels=1, layers=6, channels=4)
    reductions = [k for k, cell in model.cells.items() if cell.reduction]
    assert reductions == ["2", "4"]
    assert model.cells["5"].channels == 16  # C doubled twice
