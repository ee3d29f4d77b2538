"""Training-free CSNAS fitnesses (NASWOT, synflow, Jacobian covariance), checked by hand."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from autorobust.cli import build_parser
from autorobust.config import load_config
from autorobust.errors import AutorobustError
from autorobust.experiment import build_splits
from autorobust.methods.csnas.config import FITNESS_NAMES
from autorobust.methods.csnas.darts import DARTS_V2, DartsNetwork
from autorobust.methods.csnas.fitness import (
    FITNESSES,
    activation_code_kernel,
    create_fitness,
    jacobian_covariance_score,
    naswot_score,
    synflow_score,
)
from autorobust.methods.csnas.search import run_search

ZERO_COST = ("naswot", "synflow", "jacob_cov")


def _linear(weight: list[list[float]]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float64))
    return layer.double()


def test_naswot_kernel_and_score_of_a_two_layer_relu_mlp_written_out() -> None:
    # Layer 1 is the identity, so its ReLU codes are the signs of x; layer 2's pre-activations
    # are W2 relu(x): [1, 1], [0, 1], [0, 0].
    mlp = nn.Sequential(
        _linear([[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
        nn.ReLU(),
        _linear([[1, -1, 0], [0, 1, 1]]),
        nn.ReLU(),
        _linear([[1, 1]]),
    )
    x = torch.tensor([[1, -1, 1], [1, 1, -1], [-1, -1, -1]], dtype=torch.float64)
    # codes over the 5 units: [1,0,1 | 1,1], [1,1,0 | 0,1], [0,0,0 | 0,0]; K_ij = agreements
    expected = torch.tensor([[5, 2, 1], [2, 5, 2], [1, 2, 5]], dtype=torch.float64)
    torch.testing.assert_close(activation_code_kernel(mlp, x), expected)
    det = 5 * (25 - 4) - 2 * (10 - 2) + 1 * (4 - 5)  # = 88, by cofactors
    assert naswot_score(mlp, x) == pytest.approx(math.log(det), rel=1e-12)
    assert naswot_score(mlp, x[[0, 0, 1]]) == -math.inf  # two equal codes: K is singular


def test_synflow_of_a_bias_free_mlp_written_out_and_the_network_is_left_as_it_was() -> None:
    mlp = nn.Sequential(_linear([[1, -2], [3, 0.5]]), nn.ReLU(), _linear([[-1, 2]]))
    before = copy.deepcopy(mlp.state_dict())
    # |W1| 1 = [3, 3.5]; R = |W2| [3, 3.5] = 10. Layer 2: sum |w| h = 10; layer 1: sum_jk
    # |W1_jk| |W2_j| = 1 (1 + 2) + 2 (3 + 0.5) = 10. S = 20.
    assert synflow_score(mlp, (2,)) == pytest.approx(20.0, rel=1e-12)
    for name, tensor in mlp.state_dict().items():
        assert torch.equal(tensor, before[name]) and tensor.dtype == torch.float64
    assert all(p.grad is None for p in mlp.parameters())


def test_synflow_conserves_the_flow_through_every_layer_of_a_random_mlp() -> None:
    # Without biases, each layer's total synaptic flow equals R (Tanaka et al., Theorem 1), so
    # S = layers * R with R = 1^T |W3| |W2| |W1| 1.
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(5, 4, generator=g), torch.randn(3, 5, generator=g)]
    weights.append(torch.randn(2, 3, generator=g))
    mlp = nn.Sequential(
        _linear(weights[0].tolist()), nn.ReLU(), _linear(weights[1].tolist()), nn.ReLU()
    )
    mlp.append(_linear(weights[2].tolist()))
    r = torch.ones(4, dtype=torch.float64)
    for w in weights:
        r = w.abs().double() @ r
    assert synflow_score(mlp, (4,)) == pytest.approx(3 * float(r.sum()), rel=1e-10)


def _jacob_cov_by_hand(eigenvalues: list[float], k: float = 1e-5) -> float:
    return -sum(math.log(v + k) + 1 / (v + k) for v in eigenvalues)


def test_jacobian_covariance_of_a_relu_mlp_written_out() -> None:
    # J_n = W1^T diag(c_n) W2^T with W1 = I and W2 = [1, 2, 3]: J_1 = [1, 0, 3], J_2 = [1, 2, 0].
    mlp = nn.Sequential(_linear([[1, 0, 0], [0, 1, 0], [0, 0, 1]]), nn.ReLU(), _linear([[1, 2, 3]]))
    x = torch.tensor([[1, -1, 1], [1, 1, -1]], dtype=torch.float64)
    # deviations from the means 4/3 and 1: [-1/3, -4/3, 5/3] and [0, 1, -1]
    r = -3 / (math.sqrt(42) / 3 * math.sqrt(2))
    assert jacobian_covariance_score(mlp, x) == pytest.approx(
        _jacob_cov_by_hand([1 + r, 1 - r]), rel=1e-9
    )
    # A linear map has the same Jacobian for every image: correlation all ones, eigenvalues B, 0..
    linear = _linear([[0.5, -1, 2, 1]])
    batch = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert jacobian_covariance_score(linear, batch) == pytest.approx(
        _jacob_cov_by_hand([3, 0, 0]), rel=1e-9
    )


def _settings(**update):
    return load_config("csnas-digits", ["device=cpu"]).architecture.model_copy(update=update)


def _network(seed: int = 0) -> DartsNetwork:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DartsNetwork(num_classes=10, in_channels=1, genotype=DARTS_V2, layers=2, channels=4)


@pytest.fixture(scope="module")
def unlabeled() -> np.ndarray:
    config = load_config("csnas-digits", ["device=cpu", "data.unlabeled_fraction=0.05"])
    return build_splits(config).unlabeled


@pytest.mark.parametrize("name", ZERO_COST)
def test_zero_cost_fitness_reads_no_label_and_is_the_negated_mean_score(name, unlabeled) -> None:
    only_images = SimpleNamespace(unlabeled=unlabeled)  # any label access would fail
    one = create_fitness(
        name, settings=_settings(score_inits=1, score_batch=16), device=torch.device("cpu"), seed=3
    )
    assert one.uses_labels is False and one.trains is False
    network = _network()
    before = copy.deepcopy(network.state_dict())
    reports: list[tuple[int, float]] = []
    result = one.evaluate(network, only_images, report=lambda e, v: reports.append((e, v)))
    # One initialisation: the candidate as given, left as it was (weights and running stats).
    for key, tensor in network.state_dict().items():
        assert torch.equal(tensor, before[key]), key
    batch = one._batch(only_images)
    assert batch.shape == (16, 1, 8, 8)
    assert result.value == pytest.approx(-one.score(_network(), batch), rel=1e-9)
    assert reports == [(0, result.value)] and result.history == [result.value]
    assert np.isfinite(result.value) and result.cpu_seconds > 0

    three = create_fitness(
        name, settings=_settings(score_inits=3, score_batch=16), device=torch.device("cpu"), seed=3
    )
    averaged = three.evaluate(_network(), only_images).value
    assert averaged == three.evaluate(_network(), only_images).value  # seeded
    assert averaged != pytest.approx(result.value, rel=1e-9)  # other initialisations count


def test_naswot_refuses_a_batch_of_identical_images(unlabeled) -> None:
    same = SimpleNamespace(unlabeled=np.repeat(unlabeled[:1], 8, axis=0))
    fitness = create_fitness(
        "naswot", settings=_settings(score_inits=1), device=torch.device("cpu"), seed=0
    )
    with pytest.raises(AutorobustError, match=r"naswot fitness is not finite.*K is singular"):
        fitness.evaluate(_network(), same)


def test_every_fitness_name_is_registered_configurable_and_a_cli_choice() -> None:
    assert FITNESSES.names() == sorted(FITNESS_NAMES)
    assert set(ZERO_COST) <= set(FITNESS_NAMES)
    for name in FITNESS_NAMES:
        config = load_config("csnas-digits", [f"architecture.fitness={name}"])
        assert config.architecture.fitness == name
        args = build_parser().parse_args(["search", "architecture", "x", "--fitness", name])
        assert args.fitness == name
    # The CLI's parser refuses it in one line naming the flag (main prints it, exit 2).
    with pytest.raises(Exception, match=r"^--fitness: invalid choice: 'grasp' \(choose from "):
        build_parser().parse_args(["search", "architecture", "x", "--fitness", "grasp"])


def test_a_training_free_search_scores_every_trial_once_and_prunes_none(tmp_path: Path) -> None:
    overrides = ["device=cpu", "data.unlabeled_fraction=0.03", "architecture.nodes=2"]
    overrides += ["architecture.search_layers=2", "architecture.search_channels=4"]
    overrides += ["architecture.score_batch=16", "architecture.score_inits=1"]
    overrides += ["search.n_trials=4", "search.n_startup_trials=2", f"run_dir={tmp_path / 'run'}"]
    config = load_config("csnas-digits", overrides)
    outcome = run_search(config, retrain=False, fitness="naswot")
    summary = json.loads((tmp_path / "run" / "search.json").read_text())
    assert summary["fitness"] == "naswot"
    states = [t["state"] for t in summary["trials"]]
    assert states.count("COMPLETE") == 4 - states.count("PRUNED")  # pruned only if invalid
    assert all(t["invalid"] for t in summary["trials"] if t["state"] == "PRUNED")
    complete = [t for t in summary["trials"] if t["state"] == "COMPLETE"]
    assert all(len(t["intermediate"]) == 0 for t in complete)
    assert outcome.best["value"] == min(t["value"] for t in complete)
