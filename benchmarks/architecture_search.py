"""Benchmark: CSNAS (label-free DARTS cell search) on balanced and long-tailed Fashion-MNIST.

Protocol (issue 6): DARTS cells with N = 4 nodes; every candidate is trained for the same proxy
budget (``--fitness-epochs`` on at most ``--unlabeled-images`` images of the class-balanced 10%
unlabeled view, at ``--search-layers`` cells of ``--search-channels`` channels). With the same
trial budget (``--trials``, ``--startup-trials`` random start-up trials, median pruning), three
strategies search each dataset (balanced; long tail rho = 100):

    tpe-contrastive      TPE + the PIRL contrastive fitness of Eq. (3) (the paper's method)
    random-contrastive   random search + the same fitness (the paper's ablation)
    tpe-supervised       TPE + validation error after supervised training on the same images

Each strategy's best genotype is then trained from scratch with labels at ``--eval-layers`` /
``--eval-channels`` for ``--final-epochs`` (the DARTS recipe: auxiliary head, drop-path, clipping,
cutout) and measured on the balanced test split; hand-written ResNet-20 and ResNet-32 get the same
final budget. On the first dataset, ``--rank-archs`` random genotypes are each scored by the
contrastive fitness (at the search proxy, every epoch of it, at a smaller proxy and optionally a
larger one) and trained at the final budget: the Kendall tau-b between -fitness and balanced
test accuracy measures the paper's premise and what the proxy costs. ``--random-trials``
(default 50) unpruned random trials measure the compute TPE with pruning needs to reach their
best fitness (in fitness-epochs).

    python benchmarks/architecture_search.py --preset tiny                 # ~1-2 min on 2 CPU cores
    python benchmarks/architecture_search.py --preset cpu-25min             # ~25 min on 2 CPU cores
    python benchmarks/architecture_search.py --preset gpu-6min --device cuda --workers 8
    python benchmarks/architecture_search.py --summarise-only --update-readme

Every finished unit is appended to ``benchmarks/results/architecture_search.jsonl`` at once, so a
run that is killed still leaves data; ``--deadline-s`` stops waiting, kills the workers and writes
the summary (``architecture_search.{json,md}``) from what finished; ``--summarise-only`` rebuilds
the summary from the JSON lines. ``--update-readme`` fills the table between the csnas-benchmark
markers of README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import signal
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
from _common import update_readme

RESULTS = Path(__file__).resolve().parent / "results"
MARKERS = ("<!-- csnas-benchmark:start -->", "<!-- csnas-benchmark:end -->")
NAME = "architecture_search"
CONFIGS = {"balanced": "csnas-fashion-mnist", "lt100": "csnas-fashion-mnist-lt100"}
STRATEGIES = {
    "tpe-contrastive": ("tpe", "contrastive"),
    "random-contrastive": ("random", "contrastive"),
    "tpe-supervised": ("tpe", "supervised"),
}
RESNETS = ("resnet20", "resnet32")  # NAME or NAME@wW (a narrower one: first-stage width W)

# Flag defaults: a CPU-sized protocol (an estimate, not measured end to end: ~3 h on 2 cores).
DEFAULTS: dict[str, Any] = {
    "datasets": ["balanced", "lt100"],
    "seeds": [0],
    "unlabeled_images": 1000,
    "small_unlabeled_images": None,  # None: a quarter of --unlabeled-images
    "search_layers": 5,
    "search_channels": 8,
    "fitness_epochs": 3,
    "small_fitness_epochs": None,  # None: half of --fitness-epochs (at least 1)
    "large_unlabeled_images": None,  # with large_fitness_epochs: a third, larger rank proxy
    "large_fitness_epochs": None,
    "fitness_lr": None,  # None: the config's (the paper's 0.001)
    "fitness_batch": None,  # None: the config's (the paper's 150)
    "trials": 30,
    "startup_trials": 10,
    "search_timeout_s": None,
    "random_trials": 50,
    "eval_layers": 8,
    "eval_channels": 16,
    "final_epochs": 10,
    "final_batch": None,  # None: the config's 96
    "train_images": None,  # None: the whole training pool
    "test_images": None,  # None: the whole (balanced) test split
    "rank_archs": 12,
    "deadline_s": None,
    "workers": 1,
    "threads": 2,
    "resnets": list(RESNETS),
}
PRESETS: dict[str, dict[str, Any]] = {
    # A check of the whole pipeline on 2 CPU cores in about a minute; the numbers mean nothing.
    "tiny": {
        "datasets": ["balanced"],
        "unlabeled_images": 64,
        "small_unlabeled_images": 32,
        "search_layers": 3,
        "search_channels": 4,
        "fitness_epochs": 2,
        "small_fitness_epochs": 1,
        "fitness_lr": 0.01,
        "fitness_batch": 32,
        "trials": 3,
        "startup_trials": 2,
        "random_trials": 4,
        "eval_layers": 3,
        "eval_channels": 4,
        "final_epochs": 1,
        "final_batch": 128,
        "train_images": 512,
        "test_images": 1000,
        "rank_archs": 4,
        "deadline_s": 240,
    },
    # 2 CPU cores, 2 single-threaded workers, about 25 minutes (stops at 40). A DARTS network is
    # overhead-bound on a CPU (measured, one thread: 5 cells x 8 channels ~6 ms an image forward
    # and backward, ResNet-32 ~3 ms), so everything is small: candidates of 4 cells x 8 channels
    # scored on 384 unlabeled images for 2 epochs; 16 trials per study; final networks of
    # 5 cells x 8 channels trained for 4 epochs on 3000 pool images and measured on 2000 balanced
    # test images. Both datasets, 12 random architectures for the rank correlation (their fitness
    # also at 96 images x 1 epoch and at 1152 images x 4 epochs), 50 unpruned random trials for the
    # compute comparison.
    "cpu-25min": {
        "unlabeled_images": 384,
        "small_unlabeled_images": 96,
        "large_unlabeled_images": 1152,
        "large_fitness_epochs": 4,
        # + ResNet-32 at width 6: 0.066 M parameters, the size of these cells (0.05-0.06 M)
        "resnets": ["resnet20", "resnet32", "resnet32@w6"],
        "search_layers": 4,
        "search_channels": 8,
        "fitness_epochs": 2,
        "small_fitness_epochs": 1,
        "fitness_lr": 0.01,
        "fitness_batch": 64,
        "trials": 16,
        "startup_trials": 6,
        "random_trials": 50,
        "eval_layers": 5,
        "eval_channels": 8,
        "final_epochs": 4,
        "final_batch": 128,
        "train_images": 3000,
        "test_images": 2000,
        "rank_archs": 12,
        "workers": 2,
        "threads": 1,
        "deadline_s": 2400,
    },
    # One H200, 8 workers, a hard 6-minute limit: search-size candidates of 5 cells x 8 channels
    # on 1000 unlabeled images for 3 epochs (~1.5 s a trial), 24 trials; final networks of
    # 8 cells x 16 channels (0.24-0.45 M parameters, between ResNet-20 and ResNet-32) for 3 epochs
    # at batch 256 on the whole pool. Searches stop proposing after 150 s and the script writes
    # its summary at 330 s whatever is unfinished.
    "gpu-6min": {
        "unlabeled_images": 1000,
        "small_unlabeled_images": 250,
        "search_layers": 5,
        "search_channels": 8,
        "fitness_epochs": 3,
        "small_fitness_epochs": 1,
        "fitness_lr": 0.01,
        "trials": 24,
        "startup_trials": 8,
        "search_timeout_s": 150,
        "random_trials": 50,
        "eval_layers": 8,
        "eval_channels": 16,
        "final_epochs": 3,
        "final_batch": 256,
        "rank_archs": 12,
        "deadline_s": 330,
    },
}

_SPLITS: dict[tuple, Any] = {}  # per worker process: the splits of each (dataset, seed, caps)


# --------------------------------------------------------------------------------------------
# Work units (run in spawned worker processes; each returns one JSON-serialisable row)


def _config(job: dict, run_dir: str) -> Any:
    from autorobust.config import load_config

    overrides = [
        f"seed={job['seed']}",
        f"run_dir={run_dir}",
        f"device={job['device']}",
        "train.progress=false",
        "architecture.nodes=4",
        f"architecture.search_layers={job['search_layers']}",
        f"architecture.search_channels={job['search_channels']}",
        f"architecture.eval_layers={job['eval_layers']}",
        f"architecture.eval_channels={job['eval_channels']}",
        f"architecture.fitness_epochs={job['fitness_epochs']}",
        f"train.epochs={job['final_epochs']}",
    ]
    for key, field in (
        ("fitness_lr", "architecture.lr"),
        ("fitness_batch", "architecture.batch_size"),
        ("final_batch", "train.batch_size"),
    ):
        if job.get(key) is not None:
            overrides.append(f"{field}={job[key]}")
    if job.get("data_root"):
        overrides.append(f"data.options.root={job['data_root']}")
    return load_config(CONFIGS[job["dataset"]], overrides)


def _nested_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted positions of ``size`` items, as class-balanced as possible; a smaller ``size`` gives
    a subset of a larger one (items are taken in order of their rank within their class)."""
    rng = np.random.default_rng([seed, 6, 1])
    order = rng.permutation(len(labels))
    rank = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        rank[members] = np.arange(len(members))
    key = np.lexsort((np.argsort(order), rank))  # by rank within class, then the permutation
    return np.sort(key[: min(size, len(labels))])


def _splits(
    job: dict,
    config: Any,
    unlabeled_images: int | None,
    train_images: int | None,
    test_images: int | None = None,
):
    """The experiment's splits with the unlabeled view, the pool and the test split capped."""
    import dataclasses

    from autorobust.data.base import ImageDataset
    from autorobust.data.splits import TrainingPool
    from autorobust.experiment import build_splits

    key = (job["dataset"], job["seed"], job.get("data_root"), unlabeled_images, train_images)
    key += (test_images,)
    if key in _SPLITS:
        return _SPLITS[key]
    base_key = (job["dataset"], job["seed"], job.get("data_root"), None, None, None)
    if base_key not in _SPLITS:
        _SPLITS[base_key] = build_splits(config)
    splits = _SPLITS[base_key]
    if unlabeled_images is not None and unlabeled_images < len(splits.unlabeled):
        # The harness balances the cap with the clean labels, as make_splits balances the view;
        # the label-free fitness itself still reads only the images.
        keep = _nested_subset(
            splits.train.clean_labels[splits.unlabeled_index], unlabeled_images, job["seed"]
        )
        splits = dataclasses.replace(
            splits, unlabeled=splits.unlabeled[keep], unlabeled_index=splits.unlabeled_index[keep]
        )
    if train_images is not None and train_images < len(splits.train):
        # A uniform subset keeps the pool's (long-tailed) class shape.
        rng = np.random.default_rng([job["seed"], 6, 2])
        keep = np.sort(rng.choice(len(splits.train), size=train_images, replace=False))
        pool = splits.train
        splits = dataclasses.replace(
            splits,
            train=TrainingPool(
                images=pool.images[keep],
                labels=pool.labels[keep],
                clean_labels=pool.clean_labels[keep],
                noise_mask=pool.noise_mask[keep],
                source_index=pool.source_index[keep],
                groups=None if pool.groups is None else pool.groups[keep],
            ),
            unlabeled=splits.unlabeled[:0],
            unlabeled_index=splits.unlabeled_index[:0],
        )
    if test_images is not None and test_images < len(splits.test):
        test = splits.test
        keep = _nested_subset(test.labels, test_images, job["seed"])  # stays balanced
        splits = dataclasses.replace(
            splits,
            test=ImageDataset(
                test.images[keep],
                test.labels[keep],
                None if test.groups is None else test.groups[keep],
            ),
        )
    _SPLITS[key] = splits
    return splits


def _setup(job: dict) -> None:
    import torch

    torch.set_num_threads(job["threads"])


def search_unit(job: dict) -> dict:
    """One study: ``job["strategy"]`` on ``job["dataset"]``; returns the best genotype and cost."""
    from autorobust.methods.csnas.search import run_search

    _setup(job)
    sampler, fitness = job["sampler"], job["fitness"]
    with tempfile.TemporaryDirectory() as run_dir:
        config = _config(job, run_dir)
        raw = config.to_dict()
        raw["search"].update(
            sampler=sampler,
            n_trials=job["trials"],
            n_startup_trials=job["startup_trials"],
            pruner=job["pruner"],
            timeout=job.get("search_timeout_s"),
            study_name=f"{job['strategy']}-{job['dataset']}",
        )
        from autorobust.config import validate_config

        config = validate_config(raw)
        splits = _splits(job, config, job["unlabeled_images"], None)
        started = time.perf_counter()
        outcome = run_search(config, retrain=False, fitness=fitness, splits=splits)
        seconds = time.perf_counter() - started
        summary = json.loads((Path(run_dir) / "search.json").read_text())
        genotype = json.loads((Path(run_dir) / "best_genotype.json").read_text())
    trials = [
        {
            "number": t["number"],
            "state": t["state"],
            "value": t["value"],
            "epochs": len(t["intermediate"]),
            "seconds": t["fitness_seconds"],
            "params": t["params"],
        }
        for t in summary["trials"]
    ]
    return {
        "unit": "search",
        **{k: job[k] for k in ("strategy", "dataset", "seed", "sampler", "fitness", "pruner")},
        "best_value": outcome.best["value"],
        "best_number": outcome.best["number"],
        "genotype": genotype,
        "wall_s": seconds,
        "fitness_epochs": int(sum(t["epochs"] for t in trials)),
        "trials": trials,
        "unlabeled_images": len(splits.unlabeled),
    }


def final_unit(job: dict) -> dict:
    """Train a genotype at the evaluation size, or a hand-written model, with the final budget."""
    from autorobust.config import validate_config
    from autorobust.experiment import train_run
    from autorobust.methods.csnas.darts import Genotype, model_cost
    from autorobust.methods.csnas.search import evaluation_config
    from autorobust.models import create_model

    _setup(job)
    with tempfile.TemporaryDirectory() as run_dir:
        config = _config(job, run_dir)
        splits = _splits(job, config, None, job.get("train_images"), job.get("test_images"))
        if job.get("genotype") is not None:
            config = evaluation_config(config, Genotype.from_dict(job["genotype"]), run_dir)
        else:
            raw = config.to_dict()
            raw["model"] = _resnet_model(job["model"])
            if config.architecture.cutout is not None:  # the same augmentation as the cells
                raw["train"]["augment"]["cutout"] = config.architecture.cutout
            config = validate_config(raw)
        started = time.perf_counter()
        metrics = train_run(config, splits=splits).metrics
        seconds = time.perf_counter() - started
    if "method" in metrics and "params" in metrics["method"]:
        params, madds = metrics["method"]["params"], metrics["method"]["multiply_adds"]
    else:
        shape = tuple(splits.train.images.shape[i] for i in (3, 1, 2))
        spec = _resnet_model(job["model"])
        model = create_model(
            spec["name"], num_classes=splits.num_classes, in_channels=shape[0], **spec["options"]
        )
        cost = model_cost(model, shape)
        params, madds = cost.params, cost.multiply_adds
    test = metrics["test"]
    return {
        "unit": "final",
        **{k: job.get(k) for k in ("role", "strategy", "dataset", "seed", "arch", "model")},
        "balanced_accuracy": test["balanced_accuracy"],
        "test_error": 1.0 - test["accuracy"],
        "worst_class_accuracy": test["worst_class_accuracy"],
        "params": params,
        "multiply_adds": madds,
        "epochs": metrics["run"]["epochs"],
        "train_size": metrics["data"]["train_size"],
        "wall_s": seconds,
        "device": metrics["run"]["device"],
    }


def _resnet_model(model: str) -> dict[str, Any]:
    """``"resnet32@w6"`` -> ``{"name": "resnet32", "options": {"width": 6}}``."""
    name, _, width = model.partition("@w")
    return {"name": name, "options": {"width": int(width)} if width else {}}


def fitness_unit(job: dict) -> dict:
    """The contrastive fitness of random genotype ``job["arch"]`` at one proxy size."""
    from autorobust.data.tensors import resolve_device
    from autorobust.methods.csnas.darts import Genotype, model_cost
    from autorobust.methods.csnas.fitness import create_fitness
    from autorobust.methods.csnas.search import build_search_network

    _setup(job)
    with tempfile.TemporaryDirectory() as run_dir:
        config = _config(job, run_dir)
    splits = _splits(job, config, job["unlabeled_images"], None)
    genotype = Genotype.from_dict(job["genotype"])
    network = build_search_network(config, genotype, splits)
    shape = tuple(splits.train.images.shape[i] for i in (3, 1, 2))
    cost = model_cost(network, shape)
    scorer = create_fitness(
        "contrastive",
        settings=config.architecture,
        device=resolve_device(config.device),
        seed=config.seed,
    )
    result = scorer.evaluate(network, splits)
    return {
        "unit": "fitness",
        **{k: job[k] for k in ("proxy", "dataset", "seed", "arch", "fitness_epochs")},
        "unlabeled_images": len(splits.unlabeled),
        "value": result.value,
        "history": result.history,
        "seconds": result.seconds,
        "search_params": cost.params,
    }


def run_unit(job: dict) -> dict:
    """Dispatch by ``job["unit"]``; a failure becomes an error row, not a lost pool."""
    import traceback

    started = time.perf_counter()
    try:
        row = {"search": search_unit, "final": final_unit, "fitness": fitness_unit}[job["unit"]](
            job
        )
    except Exception as exc:
        row = {
            "unit": job["unit"],
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=5),
            **{k: job.get(k) for k in ("role", "strategy", "dataset", "seed", "arch", "proxy")},
        }
    row["unit_s"] = time.perf_counter() - started
    return row


# --------------------------------------------------------------------------------------------
# Statistics and summary


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b of two float (n,) samples (ties corrected); nan when undefined.

    tau_b = (C - D) / sqrt((n0 - n1) (n0 - n2)) with n0 = n (n - 1) / 2 pairs, C / D concordant /
    discordant pairs and n1 / n2 the pairs tied in x / y.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 2:
        return float("nan")
    upper = np.triu_indices(n, k=1)
    dx = np.sign(x[:, None] - x[None, :])[upper]
    dy = np.sign(y[:, None] - y[None, :])[upper]
    n0 = n * (n - 1) / 2
    denominator = math.sqrt((n0 - np.sum(dx == 0)) * (n0 - np.sum(dy == 0)))
    return float(np.sum(dx * dy) / denominator) if denominator > 0 else float("nan")


def _fmt(value: float | None, spec: str = ".1f", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value * scale, spec)


def _mean_std(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "–"
    a = np.array(values) * scale
    return f"{a.mean():.2f}" if len(a) == 1 else f"{a.mean():.2f} ± {a.std():.2f}"


def compute_to_reach(search: dict, target: float) -> int | None:
    """Fitness-epochs a study spent until its best completed value first was <= ``target``."""
    spent = 0
    for trial in sorted(search["trials"], key=lambda t: t["number"]):
        spent += trial["epochs"]
        value = trial["value"] if trial["state"] == "COMPLETE" else None
        if value is not None and value <= target:
            return spent
    return None


def summarise(rows: list[dict], settings: dict) -> tuple[dict, str]:
    """The summary dict and its markdown from the unit rows (partial rows are fine)."""
    ok = [r for r in rows if "error" not in r]
    errors = [r for r in rows if "error" in r]
    searches = [r for r in ok if r["unit"] == "search" and r["strategy"] in STRATEGIES]
    finals = [r for r in ok if r["unit"] == "final"]
    fitness = [r for r in ok if r["unit"] == "fitness"]
    datasets = settings["datasets"]
    lines: list[str] = []
    summary: dict[str, Any] = {"strategies": [], "rank": [], "compute": [], "targets": {}}

    lines += [
        "| dataset | strategy | best fitness | search wall s | fitness-epochs | trials "
        "(complete / pruned) | params | mult-adds | test error % | bal. acc. % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset in datasets:
        for strategy in STRATEGIES:
            mine = [r for r in searches if r["dataset"] == dataset and r["strategy"] == strategy]
            done = [
                r
                for r in finals
                if r["role"] == "best" and r["dataset"] == dataset and r["strategy"] == strategy
            ]
            if not mine and not done:
                continue
            complete = sum(t["state"] == "COMPLETE" for r in mine for t in r["trials"])
            pruned = sum(t["state"] == "PRUNED" for r in mine for t in r["trials"])
            entry = {
                "dataset": dataset,
                "strategy": strategy,
                "best_fitness": [r["best_value"] for r in mine],
                "search_wall_s": [r["wall_s"] for r in mine],
                "fitness_epochs": [r["fitness_epochs"] for r in mine],
                "test_error": [r["test_error"] for r in done],
                "balanced_accuracy": [r["balanced_accuracy"] for r in done],
                "params": [r["params"] for r in done],
                "multiply_adds": [r["multiply_adds"] for r in done],
                "genotypes": [r["genotype"] for r in mine],
            }
            summary["strategies"].append(entry)
            lines.append(
                f"| {dataset} | {strategy} | "
                f"{_fmt(np.mean(entry['best_fitness']) if mine else None, '.4f')} | "
                f"{_fmt(np.mean(entry['search_wall_s']) if mine else None, '.0f')} | "
                f"{_fmt(np.mean(entry['fitness_epochs']) if mine else None, '.0f')} | "
                f"{complete} / {pruned} | "
                f"{_fmt(np.mean(entry['params']) / 1e6 if done else None, '.3f')} M | "
                f"{_fmt(np.mean(entry['multiply_adds']) / 1e6 if done else None, '.1f')} M | "
                f"{_mean_std(entry['test_error'])} | {_mean_std(entry['balanced_accuracy'])} |"
            )
        for model in settings.get("resnets", RESNETS):
            done = [
                r
                for r in finals
                if r["role"] == "resnet" and r["dataset"] == dataset and r["model"] == model
            ]
            if not done:
                continue
            summary["strategies"].append(
                {
                    "dataset": dataset,
                    "strategy": model,
                    "test_error": [r["test_error"] for r in done],
                    "balanced_accuracy": [r["balanced_accuracy"] for r in done],
                    "params": [r["params"] for r in done],
                    "multiply_adds": [r["multiply_adds"] for r in done],
                }
            )
            lines.append(
                f"| {dataset} | {model} (hand-written) | – | – | – | – | "
                f"{done[0]['params'] / 1e6:.3f} M | {done[0]['multiply_adds'] / 1e6:.1f} M | "
                f"{_mean_std([r['test_error'] for r in done])} | "
                f"{_mean_std([r['balanced_accuracy'] for r in done])} |"
            )

    # Rank correlation on the first dataset: -fitness (lower fitness = better) vs test accuracy.
    seed0 = settings["seeds"][0]
    accuracy = {
        r["arch"]: r["balanced_accuracy"]
        for r in finals
        if r["role"] == "rank" and r["seed"] == seed0
    }
    rank_lines = [
        "| proxy | unlabeled images | fitness epochs | s / architecture | architectures | "
        "Kendall tau-b |",
        "|---|---|---|---|---|---|",
    ]
    for proxy in ("small", "search", "large"):
        mine = [r for r in fitness if r["proxy"] == proxy and r["arch"] in accuracy]
        if not mine:
            continue
        epochs = mine[0]["fitness_epochs"]
        for epoch in range(epochs):
            usable = [r for r in mine if len(r["history"]) > epoch]
            tau = kendall_tau_b(
                [-r["history"][epoch] for r in usable], [accuracy[r["arch"]] for r in usable]
            )
            seconds = float(np.mean([r["seconds"] for r in usable])) * (epoch + 1) / epochs
            item = {
                "proxy": proxy,
                "unlabeled_images": mine[0]["unlabeled_images"],
                "fitness_epochs": epoch + 1,
                "seconds_per_arch": seconds,
                "architectures": len(usable),
                "kendall_tau_b": tau,
            }
            summary["rank"].append(item)
            rank_lines.append(
                f"| {proxy} | {item['unlabeled_images']} | {epoch + 1} | {seconds:.1f} | "
                f"{len(usable)} | {_fmt(tau, '.3f')} |"
            )
    summary["rank_points"] = [
        {
            "arch": r["arch"],
            "proxy": r["proxy"],
            "fitness": r["value"],
            "balanced_accuracy": accuracy.get(r["arch"]),
        }
        for r in fitness
    ]

    # Compute: TPE with pruning vs unpruned random trials (first dataset).
    compute_lines: list[str] = []
    reference = [r for r in ok if r["unit"] == "search" and r["strategy"] == "random-unpruned"]
    for ref in reference:
        tpe = [
            r
            for r in searches
            if r["strategy"] == "tpe-contrastive"
            and r["dataset"] == ref["dataset"]
            and r["seed"] == ref["seed"]
        ]
        if not tpe:
            continue
        spent = compute_to_reach(tpe[0], ref["best_value"])
        fraction = None if spent is None else spent / max(ref["fitness_epochs"], 1)
        item = {
            "dataset": ref["dataset"],
            "random_trials": len(ref["trials"]),
            "random_best": ref["best_value"],
            "random_fitness_epochs": ref["fitness_epochs"],
            "random_wall_s": ref["wall_s"],
            "tpe_best": tpe[0]["best_value"],
            "tpe_fitness_epochs_total": tpe[0]["fitness_epochs"],
            "tpe_fitness_epochs_to_reach": spent,
            "fraction": fraction,
        }
        summary["compute"].append(item)
        reached = (
            f"reached it after {spent} fitness-epochs = {100 * fraction:.0f}% of random's compute"
            if spent is not None
            else f"did not reach it in {tpe[0]['fitness_epochs']} fitness-epochs "
            f"({100 * tpe[0]['fitness_epochs'] / max(ref['fitness_epochs'], 1):.0f}% of random's"
            f" compute; its best {tpe[0]['best_value']:.4f})"
        )
        compute_lines.append(
            f"- {ref['dataset']}: {len(ref['trials'])} unpruned random trials reach fitness "
            f"{ref['best_value']:.4f} with {ref['fitness_epochs']} fitness-epochs "
            f"({ref['wall_s']:.0f} s); TPE with median pruning {reached}."
        )

    # Targets of the issue, measured.
    taus = [r["kendall_tau_b"] for r in summary["rank"] if r["proxy"] == "search"]
    final_tau = taus[-1] if taus else None
    targets = summary["targets"]
    targets["kendall_tau_at_least_0.4"] = None if final_tau is None else bool(final_tau >= 0.4)
    if summary["compute"]:
        fraction = summary["compute"][0]["fraction"]
        targets["tpe_within_25pct_of_random_compute"] = fraction is not None and fraction <= 0.25
    for dataset in datasets:
        best = [
            e
            for e in summary["strategies"]
            if e["dataset"] == dataset and e["strategy"] == "tpe-contrastive" and e["test_error"]
        ]
        resnets = [
            e
            for e in summary["strategies"]
            if e["dataset"] == dataset
            and e["strategy"] in settings.get("resnets", RESNETS)
            and e["test_error"]
        ]
        if best and resnets:
            cell_params = float(np.mean(best[0]["params"]))
            closest = min(resnets, key=lambda e: abs(np.mean(e["params"]) - cell_params))
            targets[f"{dataset}_cell_matches_{closest['strategy']}"] = bool(
                np.mean(best[0]["test_error"]) <= np.mean(closest["test_error"])
            )

    md = "\n".join(lines)
    md += "\n\nRank correlation between the contrastive fitness and the balanced test accuracy "
    md += (
        f"after final training ({datasets[0]}; tau-b of -fitness vs accuracy, so +1 means the "
        "fitness orders the architectures exactly as their accuracy does):\n\n"
    )
    md += "\n".join(rank_lines)
    if compute_lines:
        md += "\n\nCompute of the search (fitness-epochs: candidate training epochs, pruned "
        md += "trials count the epochs they ran):\n\n" + "\n".join(compute_lines)
    md += "\n\nTargets: " + (
        ", ".join(f"{k}: {'met' if v else 'not met'}" for k, v in targets.items() if v is not None)
        or "not measured"
    )
    if errors:
        md += f"\n\nFailed units: {len(errors)} (see the JSON)."
    summary["errors"] = errors
    return summary, md


# --------------------------------------------------------------------------------------------
# Scheduling


def _jobs(settings: dict) -> tuple[list[dict], list[dict]]:
    """(searches, other units) in priority order; finals of the best cells come later."""
    from autorobust.methods.csnas.darts import random_genotype

    common = {
        k: settings[k]
        for k in (
            "device",
            "threads",
            "data_root",
            "search_layers",
            "search_channels",
            "eval_layers",
            "eval_channels",
            "final_epochs",
            "final_batch",
            "fitness_lr",
            "fitness_batch",
            "train_images",
            "test_images",
        )
    }
    fit = {
        "fitness_epochs": settings["fitness_epochs"],
        "unlabeled_images": settings["unlabeled_images"],
    }
    searches = []
    for seed in settings["seeds"]:
        for strategy, (sampler, fitness) in STRATEGIES.items():
            for dataset in settings["datasets"]:
                searches.append(
                    {
                        **common,
                        **fit,
                        "unit": "search",
                        "strategy": strategy,
                        "sampler": sampler,
                        "fitness": fitness,
                        "pruner": "median",
                        "dataset": dataset,
                        "seed": seed,
                        "trials": settings["trials"],
                        "startup_trials": settings["startup_trials"],
                        "search_timeout_s": settings["search_timeout_s"],
                    }
                )
    others = []
    first, seed0 = settings["datasets"][0], settings["seeds"][0]
    if settings["random_trials"]:
        others.append(
            {
                **common,
                **fit,
                "unit": "search",
                "strategy": "random-unpruned",
                "sampler": "random",
                "fitness": "contrastive",
                "pruner": "none",
                "dataset": first,
                "seed": seed0,
                "trials": settings["random_trials"],
                "startup_trials": 0,
                "search_timeout_s": settings["search_timeout_s"],
            }
        )
    for seed in settings["seeds"]:
        for dataset in settings["datasets"]:
            for model in settings.get("resnets", RESNETS):
                others.append(
                    {
                        **common,
                        **fit,
                        "unit": "final",
                        "role": "resnet",
                        "model": model,
                        "dataset": dataset,
                        "seed": seed,
                    }
                )
    rng = np.random.default_rng([seed0, 6, 3])
    genotypes = [random_genotype(4, rng).to_dict() for _ in range(settings["rank_archs"])]
    small = {
        "fitness_epochs": settings["small_fitness_epochs"],
        "unlabeled_images": settings["small_unlabeled_images"],
    }
    proxies = [("search", fit), ("small", small)]
    if settings.get("large_unlabeled_images") and settings.get("large_fitness_epochs"):
        large = {
            "fitness_epochs": settings["large_fitness_epochs"],
            "unlabeled_images": settings["large_unlabeled_images"],
        }
        proxies.append(("large", large))
    for proxy, sizes in proxies:
        for arch, genotype in enumerate(genotypes):
            others.append(
                {
                    **common,
                    **sizes,
                    "unit": "fitness",
                    "proxy": proxy,
                    "arch": arch,
                    "genotype": genotype,
                    "dataset": first,
                    "seed": seed0,
                }
            )
    for arch, genotype in enumerate(genotypes):
        others.append(
            {
                **common,
                **fit,
                "unit": "final",
                "role": "rank",
                "arch": arch,
                "genotype": genotype,
                "dataset": first,
                "seed": seed0,
            }
        )
    return searches, others


def _label(job: dict) -> str:
    parts = [job["unit"], job.get("role"), job.get("strategy"), job.get("model")]
    parts += [job.get("proxy"), job.get("dataset")]
    if job.get("arch") is not None:
        parts.append(f"arch{job['arch']}")
    return "/".join(str(p) for p in parts if p)


def _best_final(search: dict, genotype: dict) -> dict:
    """The final-training unit of a search's best genotype."""
    return {
        **{k: v for k, v in search.items() if k != "trials"},
        "unit": "final",
        "role": "best",
        "genotype": genotype,
    }


class _Deadline(Exception):
    pass


def run(settings: dict, jsonl: Path, done: list[dict] = ()) -> list[dict]:
    """Run every unit on a spawn pool, best-cell finals first once available; append rows.

    Units whose label is among the error-free rows ``done`` (of an earlier run) are skipped; a
    finished search whose best-cell final is missing gets that final queued at once.
    """
    searches, others = _jobs(settings)
    # Cheap and gating units first; the long unpruned random study goes before the rank finals
    # only (a deadline then costs the compute comparison before the rank correlation).
    order = {"resnet": 0, "fitness": 1, "random-unpruned": 2, "rank": 3}
    others.sort(key=lambda j: order[j.get("role") or j.get("strategy") or j["unit"]])
    finished = {_label(row) for row in done if "error" not in row}
    # rows of a resumed run count the earlier runs' wall time too (theirs ends at `offset`)
    offset = max((row.get("elapsed_s", 0.0) for row in done), default=0.0)
    queue = [job for job in searches + others if _label(job) not in finished]
    for row in done:
        search = next((job for job in searches if _label(job) == _label(row)), None)
        if search is not None and "error" not in row:
            final = _best_final(search, row["genotype"])
            if _label(final) not in finished:
                queue.insert(0, final)
    rows: list[dict] = []
    started = time.perf_counter()
    deadline = settings["deadline_s"]
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max(1, settings["workers"]), mp_context=context)
    running: dict[Future, dict] = {}

    def on_term(signum: int, frame: Any) -> None:
        raise _Deadline(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with jsonl.open("a", encoding="utf-8") as sink:
            while queue or running:
                while queue and len(running) < max(1, settings["workers"]):
                    job = queue.pop(0)
                    running[pool.submit(run_unit, job)] = job
                remaining = None if deadline is None else deadline - (time.perf_counter() - started)
                if remaining is not None and remaining <= 0:
                    raise _Deadline("deadline")
                done, _ = wait(list(running), timeout=remaining, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    row = future.result()
                    row["elapsed_s"] = offset + time.perf_counter() - started
                    rows.append(row)
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
                    status = row.get("error", "ok")
                    print(
                        f"[{row['elapsed_s']:6.0f} s] {_label(job)}: {status} "
                        f"({row['unit_s']:.1f} s)",
                        flush=True,
                    )
                    if row["unit"] == "search" and "error" not in row and job in searches:
                        queue.insert(0, _best_final(job, row["genotype"]))
    except (_Deadline, KeyboardInterrupt) as exc:
        print(
            f"stopping ({exc}): {len(running)} running and {len(queue)} queued units dropped",
            flush=True,
        )
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()  # our own spawned workers, by handle
    finally:
        signal.signal(signal.SIGTERM, previous)
        pool.shutdown(wait=False, cancel_futures=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--datasets", nargs="+", choices=sorted(CONFIGS), default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--unlabeled-images", type=int, default=None, help="cap on the view")
    parser.add_argument("--small-unlabeled-images", type=int, default=None)
    parser.add_argument("--search-layers", type=int, default=None)
    parser.add_argument("--search-channels", type=int, default=None)
    parser.add_argument("--fitness-epochs", type=int, default=None)
    parser.add_argument("--small-fitness-epochs", type=int, default=None)
    parser.add_argument("--large-unlabeled-images", type=int, default=None)
    parser.add_argument("--large-fitness-epochs", type=int, default=None)
    parser.add_argument("--fitness-lr", type=float, default=None)
    parser.add_argument("--fitness-batch", type=int, default=None)
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--startup-trials", type=int, default=None)
    parser.add_argument("--search-timeout-s", type=float, default=None)
    parser.add_argument(
        "--random-trials", type=int, default=None, help="unpruned random trials; 0: skip"
    )
    parser.add_argument("--eval-layers", type=int, default=None)
    parser.add_argument("--eval-channels", type=int, default=None)
    parser.add_argument("--final-epochs", type=int, default=None)
    parser.add_argument("--final-batch", type=int, default=None)
    parser.add_argument("--train-images", type=int, default=None, help="cap on the final pool")
    parser.add_argument("--test-images", type=int, default=None, help="balanced test subset")
    parser.add_argument("--rank-archs", type=int, default=None)
    parser.add_argument(
        "--resnets", nargs="+", default=None, help="hand-written baselines: NAME or NAME@wWIDTH"
    )
    parser.add_argument("--deadline-s", type=float, default=None)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (2)")
    parser.add_argument(
        "--data-root", default=None, help="Fashion-MNIST folder (default: config's)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--summarise-only", action="store_true", help="from the JSON lines")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished units of the JSON lines (same settings) and run only the rest",
    )
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)

    settings = dict(DEFAULTS)
    if args.preset:
        settings.update(PRESETS[args.preset])
    for key, value in vars(args).items():
        if key not in DEFAULTS or value is not None:
            settings[key] = value
    if settings["small_unlabeled_images"] is None:
        settings["small_unlabeled_images"] = max(2, settings["unlabeled_images"] // 4)
    if settings["small_fitness_epochs"] is None:
        settings["small_fitness_epochs"] = max(1, settings["fitness_epochs"] // 2)
    settings["out"] = str(settings["out"])

    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / f"{NAME}.jsonl"
    started = time.perf_counter()
    if args.summarise_only:
        lines = jsonl.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        header = [r for r in records if r.get("unit") == "settings"]
        settings = header[-1]["settings"] if header else settings
        rows = [r for r in records if r.get("unit") != "settings"]
        elapsed = header[-1].get("elapsed_s") if header else None
    else:
        done: list[dict] = []
        if args.resume and jsonl.is_file():
            lines = jsonl.read_text(encoding="utf-8").splitlines()
            done = [json.loads(line) for line in lines if line.strip()]
            done = [r for r in done if r.get("unit") != "settings" and "error" not in r]
        with jsonl.open("w", encoding="utf-8") as sink:
            sink.write(json.dumps({"unit": "settings", "settings": settings}) + "\n")
            for row in done:
                sink.write(json.dumps(row) + "\n")
        print(json.dumps(settings), flush=True)
        rows = done + run(settings, jsonl, done)
        # a resumed run adds the earlier run's wall time (its last row's elapsed_s)
        earlier = max((r.get("elapsed_s", 0.0) for r in done), default=0.0)
        elapsed = earlier + time.perf_counter() - started
    summary, table = summarise(rows, settings)
    device = next((r["device"] for r in rows if r.get("device")), settings["device"])
    preset = f" --preset {args.preset}" if args.preset else ""
    note = (
        f"Fashion-MNIST ({', '.join(settings['datasets'])}), N = 4; search proxy "
        f"{settings['search_layers']} cells x {settings['search_channels']} channels, "
        f"{settings['fitness_epochs']} epochs on {settings['unlabeled_images']} unlabeled images, "
        f"{settings['trials']} trials ({settings['startup_trials']} random start-up); final "
        f"training {settings['eval_layers']} cells x {settings['eval_channels']} channels, "
        f"{settings['final_epochs']} epochs"
        + (f" on {settings['train_images']} images" if settings["train_images"] else "")
        + (f", {settings['test_images']} test images" if settings["test_images"] else "")
        + f"; {len(settings['seeds'])} seed(s); device {device}, {settings['workers']} workers, "
        + (f"{elapsed:.0f} s in all" if elapsed else "")
        + f"; measured {time.strftime('%Y-%m-%d')}. Reproduce: "
        f"`python benchmarks/architecture_search.py{preset}`."
    )
    (args.out / f"{NAME}.json").write_text(
        json.dumps(
            {
                "note": note,
                "settings": settings,
                "elapsed_s": elapsed,
                "python": platform.python_version(),
                "summary": summary,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    (args.out / f"{NAME}.md").write_text(note + "\n\n" + table + "\n")
    print(table)
    if args.update_readme:
        update_readme(MARKERS, table, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
