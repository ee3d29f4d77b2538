"""Benchmark: AutoBalance against fixed losses on long-tailed Fashion-MNIST, 0% and 20% noise.

Protocol (issue 5): Fashion-MNIST, 100 clean images per class as the meta / validation split, long
tail rho = 100, then 0% or 20% symmetric noise; `small_cnn`, the same epochs (15) for every method;
3 seeds; balanced and worst-class accuracy on the balanced test split. Methods: cross-entropy,
logit adjustment (τ = 1), LDAM-DRW, the VS loss with fixed parameters (Kini et al. 2021: Δ_c =
(n_c / n_max)^γ, ι = τ log π, γ = 0.2, τ = 1.5, as the parametric loss), and AutoBalance (one
bilevel run from the bundled fashion-mnist-lt100*-autobalance configs, then retraining on the whole
pool). Cost: AutoBalance's wall time (search + retraining) / the same seed's CE training.

    python benchmarks/autobalance.py                           # the full table (30 runs)
    python benchmarks/autobalance.py --device cuda --workers 4
    python benchmarks/autobalance.py --epochs 2 --warmup 1 --seeds 0 --noise 0 \
        --methods cross_entropy autobalance

Writes benchmarks/results/autobalance.{json,md} and, with --update-docs, the table in
docs/benchmarks.md between the autobalance-benchmark markers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import add_run_arguments, earlier_rows, run_jobs, run_overrides, write_results

RESULTS = Path(__file__).resolve().parent / "results"
MARKERS = ("<!-- autobalance-benchmark:start -->", "<!-- autobalance-benchmark:end -->")
METHODS = ("cross_entropy", "logit_adjustment", "ldam", "vs", "autobalance")
# Fixed losses: (loss name, options).
FIXED = {
    "cross_entropy": ("cross_entropy", {}),
    "logit_adjustment": ("logit_adjustment", {"tau": 1.0}),
    "ldam": ("ldam", {}),
    "vs": ("parametric", {"cdt_gamma": 0.2, "init": "logit_adjustment", "tau": 1.5}),
}


def _config_name(noise: float) -> str:
    return (
        "fashion-mnist-lt100-autobalance" if noise == 0 else "fashion-mnist-lt100-sym20-autobalance"
    )


def run_one(job: dict) -> dict:
    """Train one (method, noise, seed) cell; returns its test metrics and wall time."""
    import torch

    from autorobust.config import load_config, validate_config
    from autorobust.experiment import train_run
    from autorobust.methods.autobalance.search import run_search

    torch.set_num_threads(job["threads"])
    with tempfile.TemporaryDirectory() as run_dir:
        overrides = [
            *run_overrides(job, run_dir),
            f"bilevel.warmup_epochs={min(job['warmup'], job['epochs'] - 1)}",
        ]
        config = load_config(_config_name(job["noise"]), overrides)
        started = time.perf_counter()
        extra = {}
        if job["method"] == "autobalance":
            outcome = run_search(config, default_study_name="autobalance-benchmark")
            metrics = outcome.retrained.metrics
            learned = json.loads((Path(run_dir) / "learned_loss.json").read_text())
            extra = {
                "learned_offset": learned["options"]["offset"],
                "search_seconds": learned["seconds"],
                "upper_steps": learned["method"]["upper_steps"],
                "neumann_diverging_steps": learned["method"]["neumann_diverging_steps"],
            }
        else:
            name, options = FIXED[job["method"]]
            raw = config.to_dict()
            raw["loss"] = {"name": name, "options": options}
            metrics = train_run(validate_config(raw, where="benchmark")).metrics
        wall = time.perf_counter() - started
    test = metrics["test"]
    return {
        **{k: job[k] for k in ("method", "noise", "seed", "epochs")},
        "balanced_accuracy": test["balanced_accuracy"],
        "worst_class_accuracy": test["worst_class_accuracy"],
        "accuracy": test["accuracy"],
        "few_shot_accuracy": test.get("few_shot_accuracy"),
        "wall_seconds": wall,
        "device": metrics["run"]["device"],
        **extra,
    }


def summarise(rows: list[dict], methods: list[str], noises: list[float]) -> str:
    """Markdown table: balanced and worst-class accuracy (mean ± std) and, per noise level, the
    wall time over the same seed's CE run on the same device (mean over seeds)."""
    header = (
        ["method"]
        + [f"bal. acc. {int(100 * n)}% noise" for n in noises]
        + [f"worst-class {int(100 * n)}%" for n in noises]
        + [f"time / CE run {int(100 * n)}%" for n in noises]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ce_time = {
        (r["noise"], r["seed"], r["device"]): r["wall_seconds"]
        for r in rows
        if r["method"] == "cross_entropy"
    }
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        cells = [method]
        for key in ("balanced_accuracy", "worst_class_accuracy"):
            for noise in noises:
                values = np.array([r[key] for r in mine if r["noise"] == noise]) * 100
                cells.append(f"{values.mean():.1f} ± {values.std():.1f}" if values.size else "–")
        for noise in noises:
            ratios = [
                r["wall_seconds"] / ce_time[(noise, r["seed"], r["device"])]
                for r in mine
                if r["noise"] == noise and (noise, r["seed"], r["device"]) in ce_time
            ]
            cells.append(f"{np.mean(ratios):.2f}×" if ratios else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--noise", nargs="+", type=float, default=[0.0, 0.2])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3, help="AutoBalance CE warm-up epochs")
    add_run_arguments(parser, RESULTS)
    parser.add_argument(
        "--rows-from",
        type=Path,
        help="results JSON of an earlier run: keep its rows for the (method, noise, seed) cells "
        "this run does not compute (e.g. re-measure one noise level)",
    )
    parser.add_argument(
        "--summarise-only",
        action="store_true",
        help="run nothing: rebuild the table (all --methods) from --rows-from",
    )
    args = parser.parse_args(argv)
    if args.summarise_only and args.rows_from is None:
        parser.error("--summarise-only needs --rows-from")

    jobs = [
        {
            "method": method,
            "noise": noise,
            "seed": seed,
            "epochs": args.epochs,
            "warmup": args.warmup,
            "device": args.device,
            "threads": args.threads,
            "data_root": args.data_root,
        }
        for noise in args.noise
        for seed in args.seeds
        for method in args.methods
        if not args.summarise_only
    ]
    started = time.perf_counter()
    rows = earlier_rows(args.rows_from, jobs, lambda r: (r["method"], r["noise"], r["seed"]))
    for row in run_jobs(run_one, jobs, args.workers):
        rows.append(row)
        print(json.dumps(row), flush=True)
    elapsed = time.perf_counter() - started
    noises = sorted({row["noise"] for row in rows})
    table = summarise(rows, [m for m in METHODS if any(r["method"] == m for r in rows)], noises)
    on_device = {n: sorted({r["device"] for r in rows if r["noise"] == n}) for n in noises}
    devices = "; ".join(f"{int(100 * n)}% noise on {'/'.join(on_device[n])}" for n in noises)
    note = (
        "Fashion-MNIST, long tail rho=100, then 0/20% symmetric noise, `small_cnn`, "
        f"{args.epochs} epochs for every method, seeds {args.seeds}, {devices} "
        f"({args.workers} parallel runs in this invocation; the time ratio compares runs on the "
        f"same device and is only meaningful with --workers 1 or on a GPU), measured "
        f"{time.strftime('%Y-%m-%d')}; reproduce: `python benchmarks/autobalance.py`."
    )
    write_results(
        args.out,
        "autobalance",
        note=note,
        table=table,
        payload={"elapsed_s": elapsed, "rows": rows},
        markers=MARKERS if args.update_docs else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
