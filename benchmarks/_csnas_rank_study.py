"""The ``rank`` protocol of the CSNAS benchmark (issue 15): does a fitness order cells as their
accuracy after training does, and does a search with it find a cell as good as a supervised one?

1. ``--rank-cells`` random valid genotypes (N = 4; drawn from ``--cell-seed``) are each trained
   with labels at the final budget (``--eval-layers/--eval-channels``, ``--final-epochs`` on
   ``--train-images`` pool images, SGD at ``--final-lr``), once per training seed (``--seeds``,
   two by default) on the same splits (data seed 0), on every dataset; the balanced test accuracy
   is the ground truth and the tau-b between the two seeds' accuracies is the ceiling any fitness
   can reach.
2. Every cell is scored on every dataset by every fitness of ``--rank-fitnesses`` at the search
   proxy (a ``--search-layers`` x ``--search-channels`` network; the trained fitnesses train it
   for ``--fitness-epochs`` on ``--unlabeled-images`` images; the training-free ones use
   ``--score-batch`` of those images and ``--score-inits`` initialisations), with its CPU time.
3. For every fitness of ``--search-fitnesses``, TPE (``--trials``, ``--startup-trials``) searches
   each dataset; each best genotype is trained like the random cells (both seeds).

Every unit's row carries a ``key`` (what it computed, at which sizes) and is appended to
``architecture_rank.jsonl`` at once. A later run skips every unit whose key is already there, so a
stopped run resumes, and a run with other fitnesses or more cells reuses the trained cells.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _csnas_common import (
    capped_splits,
    check_stop,
    final_training,
    job_config,
    read_jsonl,
    run_pool,
)

NAME = "architecture_rank"
MARKERS = ("<!-- csnas-rank:start -->", "<!-- csnas-rank:end -->")
TRAINING_FREE = ("naswot", "synflow", "jacob_cov")

CELL_FIELDS = ("eval_layers", "eval_channels", "final_epochs", "final_batch", "final_lr")
CELL_FIELDS += ("train_images", "test_images", "plain_final")
PROXY_FIELDS = ("search_layers", "search_channels", "unlabeled_images", "fitness_epochs")
PROXY_FIELDS += ("fitness_lr", "fitness_batch", "score_batch", "score_inits")

DEFAULTS: dict[str, Any] = {
    "datasets": ["balanced", "lt100"],
    "seeds": [0, 1],  # training seeds; the data split is always seed 0's
    "rank_cells": 30,
    "cell_seed": 15,
    "rank_fitnesses": ["naswot", "synflow", "jacob_cov", "contrastive", "simclr", "supervised"],
    "search_fitnesses": ["naswot", "synflow", "jacob_cov", "supervised"],
    "combinations": ["naswot+synflow", "naswot+contrastive"],
    "search_layers": 4,
    "search_channels": 8,
    "unlabeled_images": 384,
    "fitness_epochs": 2,
    "fitness_lr": 0.01,
    "fitness_batch": 64,
    "score_batch": 128,
    "score_inits": 3,
    "trials": 30,
    "startup_trials": 10,
    "eval_layers": 3,
    "eval_channels": 4,
    "final_epochs": 5,
    "final_batch": 96,
    "final_lr": 0.05,
    "train_images": 6000,
    "test_images": None,
    "plain_final": True,
    "deadline_s": None,
    "workers": 1,
    "threads": 1,
}
PRESETS: dict[str, dict[str, Any]] = {
    # The pipeline on 2 CPU cores in a few minutes; the numbers mean nothing.
    "rank-tiny": {
        "datasets": ["balanced"],
        "rank_cells": 4,
        "rank_fitnesses": ["naswot", "synflow", "jacob_cov", "contrastive"],
        "search_fitnesses": ["naswot", "supervised"],
        "combinations": ["naswot+synflow"],
        "search_layers": 3,
        "search_channels": 4,
        "unlabeled_images": 64,
        "fitness_epochs": 1,
        "fitness_batch": 32,
        "score_batch": 32,
        "score_inits": 2,
        "trials": 3,
        "startup_trials": 2,
        "eval_layers": 2,
        "eval_channels": 4,
        "final_epochs": 1,
        "train_images": 512,
        "test_images": 1000,
        "workers": 2,
        "deadline_s": 600,
    },
    # 2 CPU cores, 2 single-threaded workers, about 2 hours of an idle machine's CPU (one
    # thread: a final training ~80 s, a contrastive score ~13 s, a training-free score 0.2-1.5 s);
    # it stops cleanly after 3 hours and the same command resumes it. A DARTS network is
    # overhead-bound on a CPU and its first cell at 28 x 28 dominates, so the final networks are
    # small (3 cells x 4 channels, ~9-13 k parameters), trained without DARTS' regularisers at
    # lr 0.05 for 5 epochs on 6000 pool images and measured on the whole test split. 30 random
    # cells x 2 datasets x 2 seeds = 120 trainings, every fitness at the earlier benchmark's
    # search proxy (4 cells x 8 channels, 384 unlabeled images, 2 epochs), 30-trial TPE searches
    # with each training-free fitness and the supervised one.
    "cpu-rank-2h": {"workers": 2, "threads": 1, "deadline_s": 3 * 3600},
    # The paper's proxy on one GPU (not run here: no GPU was lent): candidates of 8 cells x 16
    # channels trained for 5 epochs on the whole 10% unlabeled view (6000 images) at batch 150 and
    # lr 0.001, final networks of 8 cells x 16 channels with the DARTS recipe for 10 epochs on the
    # whole pool, 50 random cells, 100-trial searches with 20 random start-up trials.
    "gpu-rank": {
        "rank_cells": 50,
        "search_layers": 8,
        "search_channels": 16,
        "unlabeled_images": None,
        "fitness_epochs": 5,
        "fitness_lr": None,
        "fitness_batch": None,
        "trials": 100,
        "startup_trials": 20,
        "eval_layers": 8,
        "eval_channels": 16,
        "final_epochs": 10,
        "final_batch": 256,
        "final_lr": 0.1,
        "train_images": None,
        "plain_final": False,
        "device": "cuda",
        "workers": 8,
        "threads": 2,
    },
}


# --------------------------------------------------------------------------------------------
# Keys: what a unit computes, at which sizes (a later run reuses rows with the same key)


def _key(job: dict) -> str:
    fields: dict[str, Any] = {"unit": job["unit"], "dataset": job["dataset"]}
    if job["unit"] == "cell":
        fields.update(genotype=job["genotype"], seed=job["train_seed"])
        fields.update({k: job.get(k) for k in CELL_FIELDS})
    else:
        fields.update({k: job.get(k) for k in PROXY_FIELDS}, fitness=job["fitness"])
        if job["unit"] == "score":
            fields["genotype"] = job["genotype"]
        else:
            fields.update(trials=job["trials"], startup_trials=job["startup_trials"])
    return json.dumps(fields, sort_keys=True)


def _label(job: dict) -> str:
    what = {"cell": f"seed{job.get('train_seed')}", "score": job.get("fitness")}
    origin = job.get("origin") or f"search:{job.get('fitness')}"
    parts = [job["unit"], job["dataset"], origin, what.get(job["unit"], "")]
    if job.get("arch") is not None:
        parts.append(f"cell{job['arch']}")
    return "/".join(str(p) for p in parts if p)


# --------------------------------------------------------------------------------------------
# Work units (in spawned worker processes)


def cell_unit(job: dict) -> dict:
    """Train ``job["genotype"]`` at the final budget with training seed ``job["train_seed"]``."""
    return {"unit": "cell", **_public(job), **final_training(job, seed=job["train_seed"])}


def _proxy_config(job: dict, run_dir: str) -> tuple[Any, Any]:
    config = job_config(job, run_dir)
    return config, capped_splits(job, config, job["unlabeled_images"], None)


class _StopChecking:
    """A fitness that checks the pool's stop event before each candidate and after each epoch."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.trains = inner, inner.name, inner.trains

    def evaluate(self, network: Any, splits: Any, *, report: Any = None) -> Any:
        check_stop()

        def checked(epoch: int, value: float) -> None:
            check_stop()
            if report is not None:
                report(epoch, value)

        return self.inner.evaluate(network, splits, report=checked)


def score_unit(job: dict) -> dict:
    """Score ``job["genotype"]`` by ``job["fitness"]`` at the search proxy (CPU time included)."""
    from autorobust.data.tensors import resolve_device
    from autorobust.methods.csnas.darts import Genotype, model_cost
    from autorobust.methods.csnas.fitness import create_fitness
    from autorobust.methods.csnas.search import build_search_network

    with tempfile.TemporaryDirectory() as run_dir:
        config, splits = _proxy_config(job, run_dir)
    network = build_search_network(config, Genotype.from_dict(job["genotype"]), splits)
    cost = model_cost(network, tuple(splits.train.images.shape[i] for i in (3, 1, 2)))
    scorer = create_fitness(
        job["fitness"],
        settings=config.architecture,
        device=resolve_device(config.device),
        seed=config.seed,
    )
    result = _StopChecking(scorer).evaluate(network, splits)
    return {
        "unit": "score",
        **_public(job),
        "value": result.value,
        "history": result.history,
        "wall_s": result.seconds,
        "cpu_s": result.cpu_seconds,
        "search_params": cost.params,
        "search_multiply_adds": cost.multiply_adds,
        "unlabeled_images": len(splits.unlabeled),
    }


def search_unit(job: dict) -> dict:
    """TPE with ``job["fitness"]`` on ``job["dataset"]``; returns the best genotype and cost."""
    from autorobust.config import validate_config
    from autorobust.data.tensors import resolve_device
    from autorobust.methods.csnas.fitness import create_fitness
    from autorobust.methods.csnas.search import run_search

    cpu_started, started = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        config, splits = _proxy_config(job, run_dir)
        raw = config.to_dict()
        raw["search"].update(
            sampler="tpe",
            n_trials=job["trials"],
            n_startup_trials=job["startup_trials"],
            pruner="median",
            study_name=f"tpe-{job['fitness']}-{job['dataset']}",
        )
        config = validate_config(raw)
        scorer = create_fitness(
            job["fitness"],
            settings=config.architecture,
            device=resolve_device(config.device),
            seed=config.seed,
        )
        outcome = run_search(config, retrain=False, fitness=_StopChecking(scorer), splits=splits)
        summary = json.loads((Path(run_dir) / "search.json").read_text())
        genotype = json.loads((Path(run_dir) / "best_genotype.json").read_text())
    trials = summary["trials"]
    return {
        "unit": "search",
        **_public(job),
        "best_value": outcome.best["value"],
        "best_number": outcome.best["number"],
        "genotype": genotype,
        "states": {s: sum(t["state"] == s for t in trials) for s in ("COMPLETE", "PRUNED")},
        "fitness_epochs": int(sum(len(t["intermediate"]) for t in trials)),
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu_started,
    }


def rank_unit(job: dict) -> dict:
    """Dispatch by ``job["unit"]``; the row carries the job's key."""
    units = {"cell": cell_unit, "score": score_unit, "search": search_unit}
    return {**units[job["unit"]](job), "key": _key(job)}


def _public(job: dict) -> dict:
    keep = ("dataset", "arch", "origin", "train_seed", "fitness", "genotype")
    return {k: job[k] for k in keep if k in job}


# --------------------------------------------------------------------------------------------
# Scheduling


def rank_cells(settings: dict) -> list[dict]:
    """The random genotypes of the study, as dicts (the same for every dataset and run)."""
    from autorobust.methods.csnas.darts import random_genotype

    rng = np.random.default_rng([settings["cell_seed"], 15, 1])
    return [random_genotype(4, rng).to_dict() for _ in range(settings["rank_cells"])]


def _base(settings: dict, dataset: str) -> dict:
    keys = ("device", "data_root", *CELL_FIELDS, *PROXY_FIELDS)
    return {**{k: settings.get(k) for k in keys}, "dataset": dataset, "seed": 0}


def _cell_jobs(settings: dict, dataset: str, genotype: dict, **extra: Any) -> list[dict]:
    return [
        {**_base(settings, dataset), **extra, "unit": "cell", "genotype": genotype, "train_seed": s}
        for s in settings["seeds"]
    ]


def priority(job: dict) -> int:
    """The order units run in (lower first): training-free scores, searches, the random cells
    (the ground truth: both seeds, both datasets, cell by cell), the searches' best cells, and the
    trained fitnesses' scores (the longest scores, only needed for their own rows)."""
    if job["unit"] == "score":
        return 0 if job["fitness"] in TRAINING_FREE else 4
    if job["unit"] == "search":
        return 1
    return 2 if job.get("origin") == "random" else 3


def jobs(settings: dict) -> list[dict]:
    """Every unit of the study in :func:`priority` order (the searches' best cells come later)."""
    cells = rank_cells(settings)
    scores = {
        free: [
            {**_base(settings, d), "unit": "score", "fitness": f, "arch": k, "origin": "random"}
            | {"genotype": g}
            for f in settings["rank_fitnesses"]
            if (f in TRAINING_FREE) == free
            for d in settings["datasets"]
            for k, g in enumerate(cells)
        ]
        for free in (True, False)
    }
    searches = [
        {**_base(settings, d), "unit": "search", "fitness": f}
        | {"trials": settings["trials"], "startup_trials": settings["startup_trials"]}
        for f in sorted(settings["search_fitnesses"], key=lambda f: f not in TRAINING_FREE)
        for d in settings["datasets"]
    ]
    trained = [
        job
        for k, g in enumerate(cells)
        for d in settings["datasets"]
        for job in _cell_jobs(settings, d, g, arch=k, origin="random")
    ]
    return sorted(scores[True] + searches + trained + scores[False], key=priority)


def run(settings: dict, jsonl: Path) -> list[dict]:
    """Run the units whose key is not yet in ``jsonl`` (plus the finals of finished searches);
    return every error-free row of the file that belongs to this study."""
    earlier = [r for r in read_jsonl(jsonl) if r.get("unit") != "settings" and "error" not in r]
    done = {r["key"] for r in earlier if "key" in r}
    queue = jobs(settings)
    search_finals = []
    for row in earlier:
        if row["unit"] == "search" and row["key"] in {_key(j) for j in queue}:
            search_finals += _search_cells(settings, row)
    queue = sorted((job for job in queue + search_finals if _key(job) not in done), key=priority)
    offset = max((r.get("elapsed_s", 0.0) for r in earlier), default=0.0)

    def follow_up(job: dict, row: dict) -> list[dict]:
        if job["unit"] != "search":
            return []
        return [j for j in _search_cells(settings, row) if _key(j) not in done]

    print(f"{len(queue)} units to run, {len(done)} reused from {jsonl}", flush=True)
    rows = run_pool(
        rank_unit,
        queue,
        workers=settings["workers"],
        threads=settings["threads"],
        sink=jsonl,
        label=_label,
        deadline_s=settings["deadline_s"],
        elapsed_offset=offset,
        follow_up=follow_up,
        priority=priority,
    )
    return earlier + [r for r in rows if "error" not in r and not r.get("stopped")]


def _search_cells(settings: dict, row: dict) -> list[dict]:
    origin = f"search:{row['fitness']}"
    return _cell_jobs(settings, row["dataset"], row["genotype"], origin=origin)


def study_rows(settings: dict, rows: list[dict]) -> list[dict]:
    """The rows of ``rows`` that this study's jobs (and its searches' finals) would compute."""
    keys = {_key(job) for job in jobs(settings)}
    searches = [r for r in rows if r.get("unit") == "search" and r.get("key") in keys]
    for row in searches:
        keys |= {_key(job) for job in _search_cells(settings, row)}
    return [r for r in rows if r.get("key") in keys]
