"""What the two CSNAS benchmark protocols share: configs, capped splits, the final training of a
cell, rank statistics, and running units on a process pool that stops cleanly.

Used by ``architecture_search.py`` (its ``search`` protocol in ``_csnas_search_study.py``, its
``rank`` protocol in ``_csnas_rank_study.py``).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import signal
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

CONFIGS = {"balanced": "csnas-fashion-mnist", "lt100": "csnas-fashion-mnist-lt100"}

_SPLITS: dict[tuple, Any] = {}  # per worker process: the splits of each (dataset, seed, caps)
_STOP: Any = None  # per worker process: the pool's stop event (set by the parent to stop early)


class Stopped(Exception):
    """A unit noticed the stop event (deadline, SIGINT or SIGTERM in the parent) and gave up."""


# --------------------------------------------------------------------------------------------
# Configs and splits (in the worker processes)


def job_config(job: dict, run_dir: str, seed: int | None = None) -> Any:
    """The dataset's bundled config with the job's sizes; ``seed`` (default the job's) is the
    run's seed: initial weights, shuffling, augmentation."""
    from autorobust.config import load_config

    overrides = [
        f"seed={job['seed'] if seed is None else seed}",
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
        ("final_lr", "train.lr"),
        ("score_batch", "architecture.score_batch"),
        ("score_inits", "architecture.score_inits"),
    ):
        if job.get(key) is not None:
            overrides.append(f"{field}={job[key]}")
    if job.get("plain_final"):
        # Short final budgets: DARTS' regularisers (auxiliary head, drop-path, cutout) slow the
        # first epochs down and add seed noise; every cell and every searched best trains alike.
        overrides += [
            "architecture.auxiliary_weight=0",
            "architecture.drop_path=0",
            "architecture.cutout=0",
        ]
    if job.get("data_root"):
        overrides.append(f"data.options.root={job['data_root']}")
    return load_config(CONFIGS[job["dataset"]], overrides)


def nested_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
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


def capped_splits(
    job: dict,
    config: Any,
    unlabeled_images: int | None,
    train_images: int | None,
    test_images: int | None = None,
):
    """The experiment's splits (of the data seed ``job["seed"]``) with the unlabeled view, the
    pool and the test split capped; cached per worker process."""
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
        keep = nested_subset(
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
        keep = nested_subset(test.labels, test_images, job["seed"])  # stays balanced
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


def check_stop(*_: Any) -> None:
    """Raise :class:`Stopped` if the parent asked the pool to stop (an epoch callback)."""
    if _STOP is not None and _STOP.is_set():
        raise Stopped("stop requested")


def resnet_model(model: str) -> dict[str, Any]:
    """``"resnet32@w6"`` -> ``{"name": "resnet32", "options": {"width": 6}}``."""
    name, _, width = model.partition("@w")
    return {"name": name, "options": {"width": int(width)} if width else {}}


def final_training(job: dict, seed: int | None = None) -> dict:
    """Train ``job["genotype"]`` at the evaluation size (or the hand-written ``job["model"]``)
    with the final budget and training seed ``seed`` (default the job's), on the splits of the
    job's data seed; returns the test metrics, size and CPU time."""
    import tempfile

    from autorobust.config import validate_config
    from autorobust.experiment import train_run
    from autorobust.methods.csnas.darts import Genotype, model_cost
    from autorobust.methods.csnas.search import evaluation_config
    from autorobust.models import create_model

    cpu_started, started = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        splits = capped_splits(
            job,
            job_config(job, run_dir),
            None,
            job.get("train_images"),
            job.get("test_images"),
        )
        config = job_config(job, run_dir, seed=seed)
        if job.get("genotype") is not None:
            config = evaluation_config(config, Genotype.from_dict(job["genotype"]), run_dir)
        else:
            raw = config.to_dict()
            raw["model"] = resnet_model(job["model"])
            if config.architecture.cutout is not None:  # the same augmentation as the cells
                raw["train"]["augment"]["cutout"] = config.architecture.cutout
            config = validate_config(raw)
        metrics = train_run(config, splits=splits, callbacks=[check_stop]).metrics
    if "method" in metrics and "params" in metrics["method"]:
        params, madds = metrics["method"]["params"], metrics["method"]["multiply_adds"]
    else:
        shape = tuple(splits.train.images.shape[i] for i in (3, 1, 2))
        spec = resnet_model(job["model"])
        model = create_model(
            spec["name"], num_classes=splits.num_classes, in_channels=shape[0], **spec["options"]
        )
        cost = model_cost(model, shape)
        params, madds = cost.params, cost.multiply_adds
    test = metrics["test"]
    return {
        "balanced_accuracy": test["balanced_accuracy"],
        "test_error": 1.0 - test["accuracy"],
        "worst_class_accuracy": test["worst_class_accuracy"],
        "params": params,
        "multiply_adds": madds,
        "epochs": metrics["run"]["epochs"],
        "train_size": metrics["data"]["train_size"],
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu_started,
        "device": metrics["run"]["device"],
    }


# --------------------------------------------------------------------------------------------
# Statistics


def kendall_tau_b(x: Iterable[float], y: Iterable[float]) -> float:
    """Kendall's tau-b of two float (n,) samples (ties corrected); nan when undefined.

    tau_b = (C - D) / sqrt((n0 - n1) (n0 - n2)) with n0 = n (n - 1) / 2 pairs, C / D concordant /
    discordant pairs and n1 / n2 the pairs tied in x / y.
    """
    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    n = len(x)
    if n < 2:
        return float("nan")
    upper = np.triu_indices(n, k=1)
    dx = np.sign(x[:, None] - x[None, :])[upper]
    dy = np.sign(y[:, None] - y[None, :])[upper]
    n0 = n * (n - 1) / 2
    denominator = math.sqrt((n0 - np.sum(dx == 0)) * (n0 - np.sum(dy == 0)))
    return float(np.sum(dx * dy) / denominator) if denominator > 0 else float("nan")


def bootstrap_tau_interval(
    x: Iterable[float], y: Iterable[float], *, reps: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95% interval of :func:`kendall_tau_b` over ``reps`` resamples of the pairs
    (x_i, y_i) with replacement (resamples where tau is undefined are skipped)."""
    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    if len(x) < 3:
        return float("nan"), float("nan")
    rng = np.random.default_rng([seed, 15])
    taus = []
    for _ in range(reps):
        pick = rng.integers(len(x), size=len(x))
        tau = kendall_tau_b(x[pick], y[pick])
        if math.isfinite(tau):
            taus.append(tau)
    low, high = np.percentile(taus, [2.5, 97.5])
    return float(low), float(high)


def fmt(value: float | None, spec: str = ".1f", scale: float = 1.0) -> str:
    """``value * scale`` formatted, or an en dash for None / nan."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value * scale, spec)


# --------------------------------------------------------------------------------------------
# Running units on a process pool


def _init_worker(stop: Any, threads: int) -> None:
    global _STOP
    _STOP = stop
    # Ctrl-C reaches the whole process group: the parent alone decides and sets the stop event.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)


def _identity(job: dict) -> dict:
    """The job's scalar fields (unit, role, dataset, seed, ...): what names a failed unit."""
    return {k: v for k, v in job.items() if v is None or isinstance(v, (str, int, float))}


def guarded(unit: Callable[[dict], dict], job: dict) -> dict:
    """``unit(job)`` with its duration; a failure becomes an error row, not a lost pool."""
    started = time.perf_counter()
    try:
        row = unit(job)
    except Stopped:
        row = {**_identity(job), "stopped": True}
    except Exception as exc:
        row = {
            **_identity(job),
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=5),
        }
    row["unit_s"] = time.perf_counter() - started
    return row


class _Deadline(Exception):
    pass


def run_pool(
    unit: Callable[[dict], dict],
    queue: list[dict],
    *,
    workers: int,
    threads: int,
    sink: Path,
    label: Callable[[dict], str],
    deadline_s: float | None = None,
    elapsed_offset: float = 0.0,
    follow_up: Callable[[dict, dict], list[dict]] | None = None,
    priority: Callable[[dict], int] | None = None,
) -> list[dict]:
    """Run ``unit(job)`` for every job of ``queue`` on ``workers`` spawned processes.

    Each finished row gets ``elapsed_s`` (plus ``elapsed_offset``, the earlier runs' time) and is
    appended to the JSON lines file ``sink`` at once. ``follow_up(job, row)`` may return new jobs:
    they go to the front of the queue or, given ``priority`` (lower runs first), before the first
    queued job of a higher priority. At ``deadline_s``, on Ctrl-C or on SIGTERM, no new unit
    starts, the workers' running units stop at their next epoch (a stop event they poll) and the
    pool shuts down (``cancel_futures=True``); rows of stopped units are not written.

    ``unit`` must be a module-level function (pickled by reference); it is wrapped by
    :func:`guarded` in the worker.
    """
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    rows: list[dict] = []
    running: dict[Future, dict] = {}
    started = time.perf_counter()
    queue = list(queue)

    def on_term(signum: int, frame: Any) -> None:
        raise _Deadline(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    executor = ProcessPoolExecutor(
        max(1, workers), mp_context=context, initializer=_init_worker, initargs=(stop, threads)
    )
    try:
        with sink.open("a", encoding="utf-8") as out:
            while queue or running:
                while queue and len(running) < max(1, workers):
                    job = queue.pop(0)
                    running[executor.submit(guarded, unit, job)] = job
                remaining = None
                if deadline_s is not None:
                    remaining = deadline_s - (time.perf_counter() - started)
                    if remaining <= 0:
                        raise _Deadline("deadline")
                done, _ = wait(list(running), timeout=remaining, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    row = future.result()
                    row["elapsed_s"] = elapsed_offset + time.perf_counter() - started
                    rows.append(row)
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    status = row.get("error", "ok")
                    print(
                        f"[{row['elapsed_s']:6.0f} s] {label(job)}: {status} "
                        f"({row['unit_s']:.1f} s)",
                        flush=True,
                    )
                    if follow_up is not None and "error" not in row:
                        for new in reversed(follow_up(job, row)):
                            at = 0
                            if priority is not None:
                                later = (
                                    i for i, j in enumerate(queue) if priority(j) > priority(new)
                                )
                                at = next(later, len(queue))
                            queue.insert(at, new)
    except (_Deadline, KeyboardInterrupt) as exc:
        print(
            f"stopping ({exc or 'interrupt'}): {len(running)} running units stop at their next "
            f"epoch, {len(queue)} queued units dropped",
            flush=True,
        )
        stop.set()
    finally:
        signal.signal(signal.SIGTERM, previous)
        executor.shutdown(wait=True, cancel_futures=True)
    return rows


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON lines file (``[]`` if it does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
