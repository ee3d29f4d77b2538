"""The units of ``noise_aware.py``: one method on one (ρ, noise, seed) cell, and the pool that runs
them and appends every finished unit to a JSON lines file at once.

Every method runs on the code path a user runs: ``experiment.train_run`` for the fixed losses and
MW-Net, ``methods.autobalance.search.run_search`` for AutoBalance, ``design.run_design`` for the
GLC and RoLT-style baselines (a fixed design through the same probe, noise model and retraining)
and for the searched design.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from _common import run_overrides

BASE = "fashion-mnist-lt100-sym40"
META_PER_CLASS = 10  # data.meta_per_class of the protocol (rows without the field)
REWEIGHT = "fashion-mnist-lt100-sym40-reweight"
NUM_CLASSES = 10
METHODS = (
    "ce", "la", "glc", "rolt", "mwnet_la", "autobalance", "design", "oracle_filter", "oracle_clean",
)  # fmt: skip
# The ceilings of a cell, trained with logit adjustment through a relabel file made from the
# simulated shift's truth: every wrong label dropped (a perfect filter), or every label clean.
ORACLES = ("oracle_filter", "oracle_clean")
# What the key of a unit is made of: a later run with the same key has nothing new to measure.
KEY_FIELDS = (
    "method", "rho", "noise", "seed", "epochs", "n_max", "budget", "mwnet_step", "device",
    "design_score",  # design.score of a design unit (rows without it scored the raw log-loss)
    "reference_final",  # design.reference_final of a design unit
    "design_refit",  # design.refit of a design unit (rows without it ran with refit off)
    "design_version",  # design_version(): the default space and reference designs it ran with
    "meta_per_class",  # data.meta_per_class (rows without it: 10)
)  # fmt: skip
MWNET_STEPS = {
    # The exact MW-Net step (every parameter, every step) and the cheap one (last layer, V
    # updated every 4th step; measured 1.05-1.15x a CE epoch in benchmarks/reweighting.py).
    "exact": ["reweight.meta_scope=full", "reweight.meta_interval=1"],
    "cheap": ["reweight.meta_scope=head", "reweight.meta_interval=4"],
    # Every parameter, V updated every 4th step; _mwnet_config raises V's learning rate 4-fold
    # (1e-3 → 4e-3) so that V moves as far per epoch as with the exact step: about 1.9x a CE epoch.
    "every4": ["reweight.meta_scope=full", "reweight.meta_interval=4"],
}


def head_to_tail_matrix(k: int = NUM_CLASSES, keep: float = 0.6) -> list[list[float]]:
    """Class-dependent noise that flows from majority into minority classes.

    Row c (the true class; class 0 is the head of the long tail, K−1 the rarest) keeps a
    fraction ``keep`` of its labels and sends 1 − keep uniformly to the rarer classes c+1..K−1;
    the rarest class stays clean. Returns the (K, K) row-stochastic matrix as nested lists.
    """
    matrix = []
    for c in range(k):
        row = [0.0] * k
        rarer = k - 1 - c
        row[c] = keep if rarer else 1.0
        for j in range(c + 1, k):
            row[j] = (1.0 - keep) / rarer
        matrix.append(row)
    return matrix


# Fashion-MNIST's look-alike classes (0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat,
# 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot): true class -> {observed class: rate}.
SEMANTIC_CONFUSIONS: dict[int, dict[int, float]] = {
    0: {6: 0.2, 3: 0.1},
    1: {3: 0.1},
    2: {4: 0.2, 6: 0.1},
    3: {0: 0.1, 4: 0.1},
    4: {2: 0.2, 6: 0.1},
    5: {7: 0.2},
    6: {0: 0.2, 2: 0.1},
    7: {5: 0.1, 9: 0.2},
    8: {0: 0.1},
    9: {7: 0.2, 5: 0.1},
}


def semantic_matrix(k: int = NUM_CLASSES) -> list[list[float]]:
    """Class-dependent noise between look-alike classes (``SEMANTIC_CONFUSIONS``): row c keeps
    1 − Σ of its confusion rates (70–90%). Returns the (K, K) row-stochastic matrix."""
    matrix = []
    for c in range(k):
        row = [0.0] * k
        for j, rate in SEMANTIC_CONFUSIONS[c].items():
            row[j] = rate
        row[c] = 1.0 - sum(row)
        matrix.append(row)
    return matrix


NOISES: dict[str, list[str]] = {
    "sym40": ["shift.noise=symmetric", "shift.noise_rate=0.4"],
    "pair40": ["shift.noise=pair", "shift.noise_rate=0.4"],
    "h2t40": [
        "shift.noise=matrix",
        "shift.noise_rate=0",
        f"shift.noise_matrix={json.dumps(head_to_tail_matrix())}",
    ],
    # Not in the grid: a held-out check of the kind of shift the grid does not hold.
    "semantic": [
        "shift.noise=matrix",
        "shift.noise_rate=0",
        f"shift.noise_matrix={json.dumps(semantic_matrix())}",
    ],
}


def design_version() -> str:
    """A short digest of the default design space and the reference designs: a design unit
    measured with other ones is another unit (rows without it predate the digest)."""
    from autorobust.design.config import DesignConfig
    from autorobust.design.space import REFERENCE_DESIGNS, DesignSpace

    defaults = DesignConfig()
    content = {
        "space": DesignSpace(defaults).describe(),
        "references": [d.to_dict() for d in REFERENCE_DESIGNS],
        # How the budget is spent: one half-fit per cross-fitted design at the first rung, and
        # the refit, from the first rung, only from what the study and the finalists left.
        "budget": {
            "cross_fit_swap": defaults.cross_fit_swap,
            "refit_reserved": False,
            "refit_start": "first rung",
        },
        # The finalists' ensemble is one more candidate of the one-standard-error rule (kept
        # only when better than every finalist by more than one standard error).
        "ensemble_margin": "one standard error",
        "ensemble_candidate": "one more finalist",
        # The noise model is estimated again from the best trial that never fitted on the meta
        # set, after the leading references, and averaged with the probe's (transition designs
        # trained later read the average).
        "noise_model": "average of the probe's and the second look's",
        # Finalists: the best of each noise treatment first (absent: the best by score).
        **({"finalists": "across treatments"} if defaults.finalists_across_treatments else {}),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]


def unit_key(row: dict[str, Any]) -> str:
    """The identity of a unit as a string (what --resume compares)."""
    if row.get("method") == "design" and row.get("design_refit") is None:
        row = {**row, "design_refit": False}  # measured before design.refit existed
    if row.get("meta_per_class") is None:
        row = {**row, "meta_per_class": META_PER_CLASS}  # measured before it was a flag
    return json.dumps([row.get(field) for field in KEY_FIELDS])


def cell_overrides(job: dict[str, Any], run_dir: str) -> list[str]:
    """Overrides of one cell: the shared benchmark ones (seed, device, epochs, threads, data root,
    quiet trainer, ``run_dir``), the meta set (10 per class unless the job says), ρ, the cell's
    noise and n_max."""
    shared = [o for o in run_overrides({**job, "noise": 0}, run_dir) if "shift.noise" not in o]
    meta = job.get("meta_per_class") or META_PER_CLASS
    overrides = [*shared, f"data.meta_per_class={meta}", f"shift.rho={job['rho']}"]
    overrides += NOISES[job["noise"]]
    if job["n_max"] is not None:
        overrides.append(f"shift.n_max={job['n_max']}")
    return overrides


def _test_row(metrics: dict[str, Any]) -> dict[str, Any]:
    test, data = metrics["test"], metrics.get("data", {})
    return {
        "balanced_accuracy": test["balanced_accuracy"],
        "worst_class_accuracy": test["worst_class_accuracy"],
        "accuracy": test["accuracy"],
        "train_size": data.get("train_size"),
        "noise_rate": data.get("noise_rate"),
        "device_used": metrics.get("run", {}).get("device"),
    }


def _noise_model_error(metrics: dict[str, Any]) -> dict[str, Any] | None:
    report = metrics.get("noise_model") or {}
    error = report.get("error")
    if error is None:
        return None
    row = {
        key: error[key]
        for key in (
            "prior_total_variation",
            "observed_prior_total_variation",
            "transition_row_l1_mean",
            "transition_row_l1_max",
            "prior_log_ratio_max",
        )
    }
    # Which estimate is in use (the probe's, or its average with the second look's), and the
    # probe's own error beside it.
    row["source"] = report.get("source", "probe")
    if report.get("probe_error"):
        row["probe_prior_total_variation"] = report["probe_error"]["prior_total_variation"]
    return row


def _fixed_designs() -> dict[str, Any]:
    from autorobust.design.space import ROLT_DESIGN, Design

    return {
        # GLC (Hendrycks et al. 2018): forward correction with T̂ estimated on the meta set.
        "glc": Design(treatment="transition", loss="cross_entropy", tau=0.0),
        # RoLT-style (Wei et al. 2021): prototype distance, a per-class two-component mixture,
        # relabelling where the prototype agrees; logit adjustment on the labels kept.
        "rolt": ROLT_DESIGN,
    }


def _run_method(job: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """Run ``job['method']`` in ``run_dir``; returns the retrained run's metrics and extras."""
    from autorobust.config import load_config
    from autorobust.design.pipeline import run_design
    from autorobust.experiment import train_run
    from autorobust.methods.autobalance.search import run_search

    method, overrides = job["method"], cell_overrides(job, run_dir)
    if method in ("ce", "la"):
        loss = "cross_entropy" if method == "ce" else "logit_adjustment"
        config = load_config(BASE, [*overrides, "method=erm", f"loss.name={loss}"])
        return {"metrics": train_run(config).metrics}
    if method == "mwnet_la":
        config = _mwnet_config(overrides, job["mwnet_step"])
        _check_same_protocol(config, load_config(BASE, overrides))
        metrics = train_run(config).metrics
        method_info = metrics.get("method", {})
        return {
            "metrics": metrics,
            "extra": {k: method_info.get(k) for k in ("spec_name", "noise_auc")},
        }
    if method == "autobalance":
        warmup = min(2, job["epochs"] - 1)  # the bilevel default, kept below the epochs
        config = load_config(
            BASE,
            [
                *overrides,
                "bilevel.upper_data=meta",
                "bilevel.init=logit_adjustment",
                f"bilevel.warmup_epochs={warmup}",
                "search.n_trials=1",
            ],
        )
        outcome = run_search(config, default_study_name="noise-aware-benchmark")
        return {"metrics": outcome.retrained.metrics}
    if method in ORACLES:
        config = load_config(BASE, [*overrides, "method=erm", "loss.name=logit_adjustment"])
        relabel = _oracle_relabel_file(config, method, Path(run_dir) / "oracle.npz")
        config = config.model_copy(
            update={"data": config.data.model_copy(update={"relabel_file": str(relabel)})}
        )
        return {"metrics": train_run(config).metrics}
    if method in ("glc", "rolt"):
        extra_overrides = ["design.noise_estimator=glc"] if method == "glc" else []
        config = load_config(BASE, [*overrides, *extra_overrides])
        outcome = run_design(config, fixed=_fixed_designs()[method])
        return {"metrics": outcome.retrained.metrics, "extra": _design_extra(outcome)}
    if method == "design":
        design = [
            f"design.budget={job['budget']}",
            f"design.score={job['design_score']}",
            f"design.reference_final={str(bool(job['reference_final'])).lower()}",
            f"design.refit={str(bool(job.get('design_refit'))).lower()}",
        ]
        config = load_config(BASE, [*overrides, *design])
        outcome = run_design(config, default_study_name="noise-aware-benchmark")
        return {"metrics": outcome.retrained.metrics, "extra": _design_extra(outcome)}
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def _oracle_relabel_file(config: Any, method: str, path: Path) -> Path:
    """The relabel file of an oracle: the pool's observed labels with every wrong one dropped
    (``oracle_filter``), or the pool's clean labels (``oracle_clean``)."""
    import numpy as np

    from autorobust.data.relabel import DROPPED, write_relabel_file
    from autorobust.experiment import build_splits

    pool = build_splits(config).train
    if method == "oracle_filter":
        labels = np.where(pool.noise_mask, DROPPED, pool.labels)
    else:
        labels = pool.clean_labels
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_relabel_file(path, labels=labels, source_index=pool.source_index)


def _design_extra(outcome: Any) -> dict[str, Any]:
    summary = json.loads((Path(outcome.run_dir) / "design.json").read_text(encoding="utf-8"))
    cost = summary["cost"]
    return {
        "chosen": outcome.chosen["name"],
        "final": outcome.final,
        "chosen_design": outcome.chosen["design"],
        "trials": len(summary["trials"]),
        "trial_names": [row["name"] for row in sorted(summary["trials"], key=lambda r: r["trial"])],
        "refitted": bool((summary.get("refit") or {}).get("refit_test")),
        "budget_used": cost.get("budget_used"),
        "design_cost": cost,
        "kept": (summary.get("retrained_data") or {}).get("train_size"),
    }


def _mwnet_config(overrides: list[str], step: str) -> Any:
    """The bundled MW-Net config with the cell's ``overrides`` and MW-Net ``step``
    (:data:`MWNET_STEPS`). A step through every parameter every k-th step gets k times the
    configured learning rate of V, the rule of ``reweight.meta_interval``'s docstring: Adam
    moves V by about lr per update, and V gets k times fewer of them."""
    from autorobust.config import load_config

    config = load_config(REWEIGHT, [*overrides, "reweight.plots=false", *MWNET_STEPS[step]])
    reweight = config.reweight
    if reweight.meta_scope == "full" and reweight.meta_interval > 1:
        lr = reweight.lr * reweight.meta_interval
        config = config.model_copy(update={"reweight": reweight.model_copy(update={"lr": lr})})
    return config


def _check_same_protocol(reweight: Any, base: Any) -> None:
    """MW-Net's bundled config must differ from the base only in what makes it MW-Net."""
    for section in ("data", "shift", "model", "train"):
        if getattr(reweight, section) != getattr(base, section):
            raise ValueError(f"{REWEIGHT} and {BASE} differ in section {section!r}")


def machine() -> str:
    """The CPU a unit ran on and the kernels torch picked for it, e.g. "AMD EPYC (AVX512)": two
    CPUs round floats differently, so a unit measured on another gives other numbers (seen: the
    same design unit 79.4% on one machine, 78.9% on another, bit for bit reproducible on each)."""
    import platform

    import torch

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({torch.backends.cpu.get_cpu_capability()})"


def run_unit(job: dict[str, Any]) -> dict[str, Any]:
    """Run one unit; returns its row (key fields, test metrics, noise-model error, CPU and wall
    seconds of the whole method in this process) or an error row. Never raises."""
    identity = {field: job.get(field) for field in KEY_FIELDS} | {"kind": job["kind"]}
    try:
        import torch

        # Imported before the clock starts, as the methods' own imports are not their cost.
        import autorobust.design.pipeline
        import autorobust.methods.autobalance.search  # noqa: F401

        torch.set_num_threads(job["threads"])
        with tempfile.TemporaryDirectory(prefix="noise-aware-") as run_dir:
            cpu, wall = time.process_time(), time.perf_counter()
            outcome = _run_method(job, run_dir)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        metrics = outcome["metrics"]
        return {
            **identity,
            **_test_row(metrics),
            "noise_model_error": _noise_model_error(metrics),
            **outcome.get("extra", {}),
            "cpu_s": cpu,
            "wall_s": wall,
            "threads": job["threads"],
            "machine": machine(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    except Exception as exc:  # one failed unit must not lose the others
        return {
            **identity,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
        }


def _init_worker(threads: int) -> None:
    # Ctrl-C reaches the whole process group; the parent alone decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)


class _Stop(Exception):
    pass


def run_pool(
    jobs: list[dict[str, Any]],
    *,
    workers: int,
    threads: int,
    sink: Path,
    label: Callable[[dict[str, Any]], str],
) -> list[dict[str, Any]]:
    """Run :func:`run_unit` for every job on ``workers`` spawned processes, a fresh one per unit
    (so that every unit pays the same start-up and its CPU time is its own); append each row to
    the JSON lines file ``sink`` as soon as it finishes. Ctrl-C or SIGTERM ends the running
    units (their rows are lost; the finished ones are in ``sink``) and drops the queued ones."""
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(
        max(1, workers),
        mp_context=context,
        initializer=_init_worker,
        initargs=(threads,),
        max_tasks_per_child=1,
    )
    rows: list[dict[str, Any]] = []
    queue, running = list(jobs), {}
    started = time.perf_counter()

    def on_term(signum: int, frame: Any) -> None:
        raise _Stop(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    sink.parent.mkdir(parents=True, exist_ok=True)
    try:
        while queue or running:
            while queue and len(running) < max(1, workers):
                job = queue.pop(0)
                future: Future = executor.submit(run_unit, job)
                running[future] = job
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                row = future.result()
                rows.append(row)
                # Opened for each row: a file replaced meanwhile (another run's summary, a git
                # checkout) still gets it, where a handle held open would write to the old one.
                with sink.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(row) + "\n")
                status = row.get("error") or (
                    f"bal. {100 * row['balanced_accuracy']:.1f}%, {row['cpu_s']:.0f} CPU-s"
                )
                print(
                    f"[{time.perf_counter() - started:6.0f} s] {label(job)}: {status}",
                    flush=True,
                )
    except (_Stop, KeyboardInterrupt) as exc:
        print(
            f"stopping ({exc or 'interrupt'}): {len(running)} running units ended, "
            f"{len(queue)} queued units dropped; finished units are in {sink}",
            flush=True,
        )
        # The pool's own worker processes, ended by their process ids.
        for process in list(getattr(executor, "_processes", {}).values()):
            process.terminate()
        executor.shutdown(wait=False, cancel_futures=True)
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    executor.shutdown(wait=True)
    return rows


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON lines file, or of a results JSON (``{"rows": [...]}``); [] if absent."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        return data["rows"] if isinstance(data, dict) else data
    return [json.loads(line) for line in text.splitlines() if line.strip()]
