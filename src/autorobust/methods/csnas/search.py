"""``autorobust search architecture``: CSNAS, label-free search of DARTS cells (paper 000).

Every trial asks the sampler for one operation per edge of the normal and the reduction cell
(``trial.suggest_categorical`` only, uniform prior), builds the search-size network
(``architecture.search_layers`` cells, ``search_channels`` channels), trains it for
``architecture.fitness_epochs`` epochs with the configured fitness and reports the fitness after
every epoch so the pruner can stop hopeless candidates; a training-free fitness (``naswot``,
``synflow``, ``jacob_cov``) scores the untrained candidate instead and is not pruned. Lower
fitness is better. A genotype with no path to a cell's output is pruned at once. TPE (Optuna's,
``search.n_startup_trials`` random trials first: the paper uses 20) or random search
(``--sampler random``) proposes the candidates.

The best genotype is written as ``best_genotype.json`` and drawn as ``best_genotype.png``; with
``retrain`` it is trained from scratch at the evaluation size (``eval_layers`` / ``eval_channels``)
with labels, the DARTS recipe (method ``darts``) and ``train.epochs`` epochs, in ``run_dir/best``,
whose ``metrics.json`` carries the parameters and multiply-adds under ``"method"``.

Run directory: ``study.db``, ``search.json`` (best trial, every trial's fitness, size and state),
``search_history.png``, ``best_genotype.{json,png}``, ``best/`` (the retrained network).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from autorobust.config import ExperimentConfig, validate_config
from autorobust.data.splits import Splits
from autorobust.data.tensors import resolve_device
from autorobust.errors import ConfigError
from autorobust.experiment import build_splits
from autorobust.methods.csnas.darts import (
    OPERATION_NAMES,
    DartsNetwork,
    Genotype,
    GenotypeError,
    cell_edges,
    model_cost,
)
from autorobust.methods.csnas.fitness import Fitness, create_fitness
from autorobust.search.common import SearchOutcome, prune_if_hopeless
from autorobust.search.driver import drive_search
from autorobust.search.space import SearchSpace

__all__ = [
    "CellSearchSpace",
    "build_search_network",
    "evaluation_config",
    "run_search",
]


class CellSearchSpace(SearchSpace[dict[str, list[str]]]):
    """The CSNAS space: one categorical operation per edge of the normal and reduction cells.

    Parameter names are ``normal.<i>-<j>`` / ``reduce.<i>-<j>`` for the edge from node i to node j
    (0, 1: the cell inputs; 2 .. N+1: the intermediate nodes), 2 N (N + 3) / 2 in all.

    Args:
        nodes: N, intermediate nodes per cell.
        operations: the candidate operations (default: all eight, ``none`` included).
    """

    def __init__(self, *, nodes: int, operations: Sequence[str] = OPERATION_NAMES) -> None:
        self.nodes = nodes
        self.operations = tuple(operations)

    def describe(self) -> dict[str, Any]:
        """The space as JSON-able data (stored with a study; a resumed study must match)."""
        return {"nodes": self.nodes, "operations": list(self.operations)}

    def names(self, cell: str) -> list[str]:
        """Parameter names of one cell (``"normal"`` or ``"reduce"``) in encoding order."""
        return [f"{cell}.{i}-{j}" for i, j in cell_edges(self.nodes)]

    def suggest(self, trial: Any) -> dict[str, list[str]]:
        """Ask ``trial`` for every edge; returns ``{"normal": [...], "reduce": [...]}``."""
        return {
            cell: [
                trial.suggest_categorical(name, list(self.operations)) for name in self.names(cell)
            ]
            for cell in ("normal", "reduce")
        }

    def genotype(self, point: dict[str, list[str]]) -> Genotype:
        """The validated genotype of a point (raises :class:`GenotypeError` if a cell is dead)."""
        return Genotype(
            normal=tuple(point["normal"]), reduce=tuple(point["reduce"]), nodes=self.nodes
        )

    def point_from_params(self, params: Mapping[str, Any]) -> dict[str, list[str]]:
        """Invert :meth:`suggest`: Optuna's flat params -> ``{"normal": [..], "reduce": [..]}``."""
        return {cell: [params[name] for name in self.names(cell)] for cell in ("normal", "reduce")}

    def genotype_from_params(self, params: dict[str, Any]) -> Genotype:
        """Invert :meth:`suggest`: Optuna's flat params -> the genotype."""
        return self.genotype(self.point_from_params(params))


def build_search_network(
    config: ExperimentConfig, genotype: Genotype, splits: Splits
) -> DartsNetwork:
    """The search-size candidate network; its initial weights depend only on ``config.seed``."""
    arch = config.architecture
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return DartsNetwork(
            num_classes=splits.num_classes,
            in_channels=splits.train.images.shape[-1],
            genotype=genotype,
            layers=arch.search_layers,
            channels=arch.search_channels,
        )


def evaluation_config(
    config: ExperimentConfig, genotype: Genotype, run_dir: str | Path
) -> ExperimentConfig:
    """``config`` set up to train ``genotype`` at the evaluation size with the DARTS recipe."""
    arch = config.architecture
    raw = config.to_dict()
    raw["model"] = {
        "name": "darts",
        "options": {
            "genotype": genotype.to_dict(),
            "layers": arch.eval_layers,
            "channels": arch.eval_channels,
            "auxiliary": arch.auxiliary_weight > 0,
        },
    }
    raw["method"] = "darts"
    if arch.cutout is not None:
        raw["train"]["augment"]["cutout"] = arch.cutout
    raw["run_dir"] = str(run_dir)
    return validate_config(raw, where="best genotype")


def run_search(
    config: ExperimentConfig,
    *,
    default_study_name: str = "architecture",
    retrain: bool = True,
    fitness: str | Fitness | None = None,
    splits: Splits | None = None,
) -> SearchOutcome:
    """Run (or resume) the CSNAS study of ``config`` in ``config.run_dir``.

    Args:
        config: the experiment; its ``architecture`` section sets the space and the fitness, its
            ``search`` section the sampler and budget (rerunning resumes the study).
        default_study_name: the study name when ``search.study_name`` is unset.
        retrain: train the best genotype at the evaluation size and measure it on the test split.
        fitness: a registered fitness name (``"contrastive"``, ``"naswot"``, ...; see
            :mod:`autorobust.methods.csnas.fitness`) or a :class:`Fitness` object; None:
            ``architecture.fitness``.
        splits: pre-built splits (None: build them from ``config``).

    Returns:
        The best trial's summary (``params`` are the per-edge operations, ``user_attrs`` hold the
        genotype, size and fitness history); the retrained run when ``retrain``.
    """
    import optuna

    if config.search.trial_epochs is not None:
        raise ConfigError(
            "search.trial_epochs: not used by the architecture search; set "
            "architecture.fitness_epochs instead"
        )
    arch = config.architecture
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    if fitness is None or isinstance(fitness, str):
        scorer = create_fitness(
            fitness or arch.fitness, settings=arch, device=device, seed=config.seed
        )
    else:
        scorer = fitness
    splits = build_splits(config) if splits is None else splits
    space = CellSearchSpace(nodes=arch.nodes)
    image_shape = tuple(splits.train.images.shape[i] for i in (3, 1, 2))

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("fitness", scorer.name)
        point = space.suggest(trial)
        try:
            genotype = space.genotype(point)
        except GenotypeError as exc:
            trial.set_user_attr("invalid", str(exc))
            raise optuna.TrialPruned("genotype has a cell without a path to its output") from None
        network = build_search_network(config, genotype, splits)
        cost = model_cost(network, image_shape)
        trial.set_user_attr("params", cost.params)
        trial.set_user_attr("multiply_adds", cost.multiply_adds)

        def report(epoch: int, value: float) -> None:
            prune_if_hopeless(trial, value, epoch)

        # A training-free score is final at once: nothing to prune it on.
        result = scorer.evaluate(network, splits, report=report if scorer.trains else None)
        trial.set_user_attr("fitness_history", result.history)
        trial.set_user_attr("fitness_seconds", result.seconds)
        trial.set_user_attr("fitness_cpu_seconds", result.cpu_seconds)
        return result.value

    # The fitness and its proxy size are part of the space: other values are not comparable.
    proxy = {k: getattr(arch, k) for k in ("search_layers", "search_channels", "fitness_epochs")}
    if not scorer.trains:
        proxy.update(score_batch=arch.score_batch, score_inits=arch.score_inits)

    def summary_fields(study: Any) -> dict[str, Any]:
        return {
            "fitness": scorer.name,
            "sampler": config.search.sampler,
            "trials": _trial_table(study),
        }

    def on_best(study: Any, best: dict[str, Any]) -> None:
        from autorobust.methods.csnas.report import draw_genotype, fitness_history_plot

        trials = _trial_table(study)
        complete = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
        fitness_history_plot(
            [t["number"] for t in complete],
            [t["value"] for t in complete],
            run_dir / "search_history.png",
            fitness=scorer.name,
        )
        genotype = space.genotype_from_params(best["params"])
        genotype.save(run_dir / "best_genotype.json")
        draw_genotype(
            genotype,
            run_dir / "best_genotype.png",
            title=f"best of {study.study_name}: trial {best['number']}, "
            f"fitness {best['value']:.4g}",
        )

    def best_config(best: dict[str, Any]) -> ExperimentConfig:
        genotype = space.genotype_from_params(best["params"])
        return evaluation_config(config, genotype, run_dir / "best")

    return drive_search(
        config,
        space,
        objective,
        splits=splits,
        default_study_name=default_study_name,
        best_config=best_config if retrain else None,
        describe={"fitness": scorer.name, "proxy": proxy},
        directions=("minimize",),
        summary_fields=summary_fields,
        on_best=on_best,
    )


def _trial_table(study: Any) -> list[dict[str, Any]]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        value = trial.value if trial.state.name == "COMPLETE" else None
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "value": value,
                "intermediate": [
                    trial.intermediate_values[k] for k in sorted(trial.intermediate_values)
                ],
                "params": attrs.get("params"),
                "multiply_adds": attrs.get("multiply_adds"),
                "fitness_seconds": attrs.get("fitness_seconds"),
                "invalid": attrs.get("invalid"),
            }
        )
    return rows
