"""CSNAS search: the cell space, the fitnesses, and a resumable search on digits that retrains."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch

from autorobust.cli import main
from autorobust.config import load_config
from autorobust.experiment import build_splits
from autorobust.methods.csnas.darts import DARTS_V2, DartsNetwork, Genotype
from autorobust.methods.csnas.fitness import ContrastiveFitness, SupervisedFitness
from autorobust.methods.csnas.search import CellSearchSpace, run_search

TINY = [
    "data.unlabeled_fraction=0.03",  # about 35 images
    "architecture.search_layers=2",
    "architecture.search_channels=4",
    "architecture.eval_layers=2",
    "architecture.eval_channels=4",
    "architecture.fitness_epochs=1",
    "architecture.batch_size=16",
    "architecture.nodes=2",
    "architecture.lr=0.01",
    "train.epochs=1",
    "train.progress=false",
    "search.n_startup_trials=2",
    "device=cpu",
]


def _config(tmp_path: Path, *extra: str):
    return load_config("csnas-digits", [*TINY, f"run_dir={tmp_path / 'run'}", *extra])


def _network(genotype: Genotype = DARTS_V2) -> DartsNetwork:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return DartsNetwork(num_classes=10, in_channels=1, genotype=genotype, layers=2, channels=4)


def test_space_round_trips_params_to_the_genotype() -> None:
    space = CellSearchSpace(nodes=4)
    params = {
        name: op
        for cell, ops in (("normal", DARTS_V2.normal), ("reduce", DARTS_V2.reduce))
        for name, op in zip(space.names(cell), ops, strict=True)
    }
    point = space.suggest(optuna.trial.FixedTrial(params))
    assert len(point["normal"]) == len(point["reduce"]) == 14
    assert space.genotype(point) == DARTS_V2 == space.genotype_from_params(params)
    assert space.names("reduce")[:3] == ["reduce.0-2", "reduce.1-2", "reduce.0-3"]


def test_contrastive_fitness_reads_only_the_unlabeled_images(tmp_path: Path) -> None:
    config = _config(tmp_path, "architecture.fitness_epochs=2")
    splits = build_splits(config)
    only_images = SimpleNamespace(unlabeled=splits.unlabeled)  # any label access would fail
    reports: list[tuple[int, float]] = []
    fitness = ContrastiveFitness(settings=config.architecture, device=torch.device("cpu"), seed=0)
    result = fitness.evaluate(_network(), only_images, report=lambda e, v: reports.append((e, v)))
    assert [e for e, _ in reports] == [0, 1] and result.history == [v for _, v in reports]
    assert result.value == result.history[-1] and 0 < result.value < 1e4
    again = fitness.evaluate(_network(), only_images)
    assert again.history == pytest.approx(result.history, rel=1e-5)

    bank = config.architecture.model_copy(update={"negatives": "bank", "bank_negatives": 8})
    drawn = ContrastiveFitness(settings=bank, device=torch.device("cpu"), seed=0)
    assert 0 < drawn.evaluate(_network(), only_images).value < 1e4

    supervised = SupervisedFitness(settings=config.architecture, device=torch.device("cpu"), seed=0)
    assert 0.0 <= supervised.evaluate(_network(), splits).value <= 1.0


class _InterruptedFitness(ContrastiveFitness):
    """The contrastive fitness, interrupted (Ctrl-C) during its second candidate."""

    calls = 0

    def evaluate(self, network, splits, *, report=None):
        type(self).calls += 1
        if type(self).calls == 2:
            raise KeyboardInterrupt
        return super().evaluate(network, splits, report=report)


@pytest.mark.slow  # ~30 s on an idle 2-core CPU: search, resume, retrain and `autorobust train`
def test_search_resumes_after_interruption_and_its_best_genotype_trains(
    tmp_path: Path, capsys
) -> None:
    config = _config(tmp_path, "search.n_trials=2")
    splits = build_splits(config)
    interrupted = _InterruptedFitness(
        settings=config.architecture, device=torch.device("cpu"), seed=0
    )
    with pytest.raises(KeyboardInterrupt):
        run_search(config, retrain=False, fitness=interrupted, splits=splits)
    storage = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    study = optuna.load_study(study_name="architecture", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]

    more = _config(tmp_path, "search.n_trials=3")
    outcome = run_search(more, retrain=True, splits=splits)
    run_dir = tmp_path / "run"
    summary = json.loads((run_dir / "search.json").read_text())
    states = [t["state"] for t in summary["trials"]]
    assert states.count("COMPLETE") + states.count("PRUNED") == 3 and states.count("FAIL") == 1
    assert summary["fitness"] == "contrastive"
    best = Genotype.load(run_dir / "best_genotype.json")
    assert best.nodes == 2 and outcome.best["value"] == min(
        t["value"] for t in summary["trials"] if t["value"] is not None
    )
    for name in ("best_genotype.png", "search_history.png"):
        assert (run_dir / name).read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((run_dir / "best" / "metrics.json").read_text())
    assert metrics["method"]["params"] > 0 and metrics["method"]["multiply_adds"] > 0
    assert Genotype.from_dict(metrics["method"]["genotype"]) == best
    assert 0.0 <= metrics["test"]["balanced_accuracy"] <= 1.0

    # Another fitness may not join the same study.
    with pytest.raises(Exception, match=r"created over another space \(changed: fitness\)"):
        run_search(more, retrain=False, fitness="supervised", splits=splits)

    # `autorobust train` accepts the genotype file as the model.
    train_dir = tmp_path / "train"
    args = ["train", "csnas-digits", "--run-dir", str(train_dir), "--no-progress"]
    args += ["--device", "cpu", "--set", "train.epochs=1", "--set", "model.name=darts"]
    args += ["--set", f"model.options.genotype={run_dir / 'best_genotype.json'}"]
    args += ["--set", "model.options.layers=2", "--set", "model.options.channels=4"]
    assert main(args) == 0
    assert json.loads((train_dir / "metrics.json").read_text())["run"]["model"] == "darts"
    capsys.readouterr()
