"""The ``search`` protocol of the CSNAS benchmark (issue 6): three strategies, hand-written
ResNets, the contrastive fitness's rank correlation at three proxies, and TPE's compute.

DARTS cells with N = 4 nodes; every candidate is trained for the same proxy budget
(``--fitness-epochs`` on at most ``--unlabeled-images`` images of the class-balanced 10%
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
test accuracy. ``--random-trials`` (default 50) unpruned random trials measure the compute TPE
with pruning needs to reach their best fitness (in fitness-epochs).
Results: ``architecture_search.{jsonl,json,md}``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _csnas_common import capped_splits, final_training, job_config, run_pool
from _csnas_search_summary import RESNETS, STRATEGIES

NAME = "architecture_search"
MARKERS = ("<!-- csnas-benchmark:start -->", "<!-- csnas-benchmark:end -->")

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


# --------------------------------------------------------------------------------------------
# Work units (run in spawned worker processes; each returns one JSON-serialisable row)


def search_unit(job: dict) -> dict:
    """One study: ``job["strategy"]`` on ``job["dataset"]``; returns the best genotype and cost."""
    from autorobust.methods.csnas.search import run_search

    sampler, fitness = job["sampler"], job["fitness"]
    with tempfile.TemporaryDirectory() as run_dir:
        config = job_config(job, run_dir)
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
        splits = capped_splits(job, config, job["unlabeled_images"], None)
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
    result = final_training(job)
    return {
        "unit": "final",
        **{k: job.get(k) for k in ("role", "strategy", "dataset", "seed", "arch", "model")},
        **{k: v for k, v in result.items() if k != "cpu_s"},
    }


def fitness_unit(job: dict) -> dict:
    """The contrastive fitness of random genotype ``job["arch"]`` at one proxy size."""
    from autorobust.data.tensors import resolve_device
    from autorobust.methods.csnas.darts import Genotype, model_cost
    from autorobust.methods.csnas.fitness import create_fitness
    from autorobust.methods.csnas.search import build_search_network

    with tempfile.TemporaryDirectory() as run_dir:
        config = job_config(job, run_dir)
    splits = capped_splits(job, config, job["unlabeled_images"], None)
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
    """Dispatch by ``job["unit"]`` (in a worker process)."""
    return {"search": search_unit, "final": final_unit, "fitness": fitness_unit}[job["unit"]](job)


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

    def follow_up(job: dict, row: dict) -> list[dict]:
        if row["unit"] == "search" and job in searches:
            return [_best_final(job, row["genotype"])]
        return []

    return run_pool(
        run_unit,
        queue,
        workers=settings["workers"],
        threads=settings["threads"],
        sink=jsonl,
        label=_label,
        deadline_s=settings["deadline_s"],
        elapsed_offset=offset,
        follow_up=follow_up,
    )
