"""Benchmark: Meta-Weight-Net and its searched architecture on long-tailed, noisy Fashion-MNIST.

Protocol (issue 4): Fashion-MNIST, 100 clean images per class as the meta / validation split,
long tail rho in {10, 100}, then {20, 40}% symmetric noise; `small_cnn`, the same epochs, batch,
optimiser and schedule for every method; epoch selected on the clean meta split; 3 seeds;
balanced and worst-class accuracy on the balanced test split. Methods:

    ce                cross-entropy (ERM)
    logit_adjustment  logit-adjusted CE (ERM), the strongest baseline of benchmarks/baseline_losses
    mwnet             the original MW-Net: V = 1-100-1 on the loss, plain CE, exact meta step
    mwnet_la          the same V on the logit-adjusted loss (the loss lever alone, no search)
    searched          V found by TPE (`autorobust search reweighter`, seed 0 of each cell, scored on
                      the meta split), on the --search-loss, exact meta step
    searched_cheap    the searched V with the last-layer meta-gradient and a meta step every
                      --meta-interval steps
    largest           the largest V in the search space (4 x 256, loss + features of the last conv
                      layer, class-aware), fixed, the reviewers' capacity control

Also reported: the ROC-AUC with which the last epoch's weights separate clean (positive) from noisy
samples, and seconds per epoch divided by the CE run of the same cell and seed.

    python benchmarks/reweighting.py                                   # the full protocol
    python benchmarks/reweighting.py --preset cpu-40min                # shortened, 2 CPU cores
    python benchmarks/reweighting.py --device cuda --workers 8         # on a GPU
    python benchmarks/reweighting.py --rho 100 --noise 0.4 --seeds 0 --epochs 1 --trials 2 \
        --trial-epochs 1 --methods ce mwnet searched                  # a smoke test

Writes benchmarks/results/reweighting.{json,md} and, with --update-docs, the table in
docs/benchmarks.md between the reweight-benchmark markers.
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
MARKERS = ("<!-- reweight-benchmark:start -->", "<!-- reweight-benchmark:end -->")
CONFIG = "fashion-mnist-lt100-sym40-reweight"
# Shortened protocols. cpu-40min: the full grid (2 rho x 2 noise x 3 seeds x 7 methods) in about
# 40 minutes on 2 cores: at most 1500 images per class before the long tail (3.7k training images
# at rho = 100, 6.1k at rho = 10, instead of 14.6k / 24k), 10 epochs instead of 15, 8 search trials
# of 3 epochs, two single-threaded worker processes.
PRESETS = {
    "cpu-40min": {
        "n_max": 1500,
        "epochs": 10,
        "trials": 8,
        "trial_epochs": 3,
        "workers": 2,
        "threads": 1,
    },
}
METHODS = (
    "ce",
    "logit_adjustment",
    "mwnet",
    "mwnet_la",
    "searched",
    "searched_cheap",
    "largest",
)


def _cell_overrides(job: dict, run_dir: str) -> list[str]:
    overrides = [*run_overrides(job, run_dir), f"shift.rho={job['rho']}", "reweight.plots=false"]
    if job["n_max"] is not None:
        overrides.append(f"shift.n_max={job['n_max']}")
    return overrides


def run_search_job(job: dict) -> dict:
    """TPE search of V for one (rho, noise) cell at seed 0; returns the best ``reweight`` fields."""
    import torch

    from autorobust.config import load_config
    from autorobust.methods.meta_weight_net.network import MetaWeightNetSpec
    from autorobust.methods.meta_weight_net.search import point_from_params, run_search

    torch.set_num_threads(job["threads"])
    with tempfile.TemporaryDirectory() as run_dir:
        overrides = [
            *_cell_overrides({**job, "seed": 0}, run_dir),
            f"loss.name={job['search_loss']}",
            f"search.n_trials={job['trials']}",
            f"search.trial_epochs={job['trial_epochs']}",
            f"search.n_startup_trials={max(1, min(job['trials'] // 2, 8))}",
            f"reweight.meta_scope={job['search_scope']}",
        ]
        config = load_config(CONFIG, overrides)
        started = time.perf_counter()
        outcome = run_search(config, default_study_name="bench", retrain=False)
        point = point_from_params(outcome.best["params"], config.reweight.search)
        spec = MetaWeightNetSpec.from_config(
            config.reweight.model_copy(update={**point, "hidden": point["hidden"]})
        )
    return {
        "rho": job["rho"],
        "noise": job["noise"],
        "point": point,
        "spec_name": spec.describe(),
        "val_balanced_accuracy": outcome.best["value"],
        "search_s": time.perf_counter() - started,
    }


def _method_overrides(method: str, job: dict) -> list[str]:
    if method == "ce":
        return ["method=erm", "loss.name=cross_entropy"]
    if method == "logit_adjustment":
        return ["method=erm", "loss.name=logit_adjustment"]
    exact = ["reweight.meta_scope=full", "reweight.meta_interval=1"]
    original = ["reweight.hidden=[100]", "reweight.input=loss", "reweight.class_embedding=0"]
    if method == "mwnet":
        return ["loss.name=cross_entropy", *original, *exact]
    if method == "mwnet_la":
        return ["loss.name=logit_adjustment", *original, *exact]
    if method == "largest":
        return [
            f"loss.name={job['search_loss']}",
            "reweight.hidden=[256,256,256,256]",
            "reweight.input=loss+features",
            "reweight.feature_layer=block4",
            "reweight.class_embedding=8",
            *exact,
        ]
    point = job["point"]
    searched = [
        f"loss.name={job['search_loss']}",
        f"reweight.hidden={json.dumps(point['hidden'])}",
        f"reweight.input={point['input']}",
        f"reweight.feature_layer={point['feature_layer'] or 'null'}",
        f"reweight.class_embedding={point['class_embedding']}",
        f"reweight.lr={point['lr']}",
    ]
    if method == "searched":
        return searched + exact
    if method == "searched_cheap":
        return [
            *searched,
            "reweight.meta_scope=head",
            f"reweight.meta_interval={job['meta_interval']}",
        ]
    raise SystemExit(f"--methods: unknown method {method!r}; valid: {', '.join(METHODS)}")


def run_one(job: dict) -> dict:
    """Train one (method, rho, noise, seed) cell; returns its test metrics, AUC and timing."""
    import torch

    from autorobust.config import load_config
    from autorobust.experiment import train_run

    torch.set_num_threads(job["threads"])
    with tempfile.TemporaryDirectory() as run_dir:
        overrides = _cell_overrides(job, run_dir) + _method_overrides(job["method"], job)
        config = load_config(CONFIG, overrides)
        metrics = train_run(config).metrics
    test = metrics["test"]
    method = metrics.get("method", {})
    return {
        **{k: job[k] for k in ("method", "rho", "noise", "seed", "epochs")},
        "spec": method.get("spec_name"),
        "balanced_accuracy": test["balanced_accuracy"],
        "worst_class_accuracy": test["worst_class_accuracy"],
        "accuracy": test["accuracy"],
        "noise_auc": method.get("noise_auc"),
        "mean_weight_clean": method.get("mean_weight_clean"),
        "mean_weight_noisy": method.get("mean_weight_noisy"),
        "seconds_per_epoch": metrics["run"]["seconds_per_epoch"],
        "best_epoch": metrics["run"]["best_epoch"],
        "device": metrics["run"]["device"],
    }


def _map(function, jobs: list[dict], workers: int) -> list[dict]:
    """Run ``jobs``, printing each result as a JSON line as it arrives (partial runs keep data)."""
    rows = []
    for row in run_jobs(function, jobs, workers):
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _fmt(values: list[float], std: bool = False) -> str:
    values = np.array([v for v in values if v is not None], dtype=float)
    if not values.size:
        return "–"
    return (
        f"{100 * values.mean():.1f} ± {100 * values.std():.1f}"
        if std
        else f"{100 * values.mean():.1f}"
    )


def summarise(rows: list[dict], methods: list[str]) -> str:
    """Markdown table: one row per (cell, method); accuracy in %, AUC x 100, time ratio vs CE."""
    header = [
        "ρ",
        "noise",
        "method",
        "V",
        "bal. acc.",
        "worst-class",
        "noise AUC",
        "epoch time / CE",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cells = sorted({(r["rho"], r["noise"]) for r in rows})
    for rho, noise in cells:
        mine = [r for r in rows if r["rho"] == rho and r["noise"] == noise]
        ce_time = {r["seed"]: r["seconds_per_epoch"] for r in mine if r["method"] == "ce"}
        for method in methods:
            group = [r for r in mine if r["method"] == method]
            if not group:
                continue
            ratios = [
                r["seconds_per_epoch"] / ce_time[r["seed"]] for r in group if r["seed"] in ce_time
            ]
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"{rho:g}",
                        f"{round(100 * noise)}%",
                        method,
                        group[0]["spec"] or "–",
                        _fmt([r["balanced_accuracy"] for r in group], std=True),
                        _fmt([r["worst_class_accuracy"] for r in group]),
                        _fmt([r["noise_auc"] for r in group]),
                        f"{np.mean(ratios):.2f}" if ratios else "–",
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--rho", nargs="+", type=float, default=[10.0, 100.0])
    parser.add_argument("--noise", nargs="+", type=float, default=[0.2, 0.4])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--n-max", type=int, default=None, help="images of the largest class (shift.n_max)"
    )
    parser.add_argument("--trials", type=int, default=16, help="TPE trials per (rho, noise) cell")
    parser.add_argument("--trial-epochs", type=int, default=5)
    parser.add_argument(
        "--search-scope",
        default="head",
        choices=["head", "full"],
        help="meta-gradient of the search trials (head: the cheaper last-layer step)",
    )
    parser.add_argument(
        "--search-loss",
        default="logit_adjustment",
        help="training loss under the searched and the largest V",
    )
    parser.add_argument("--meta-interval", type=int, default=4, help="k of searched_cheap")
    add_run_arguments(parser, RESULTS)
    parser.add_argument(
        "--rows-from",
        type=Path,
        help="results JSON (or a JSON list of rows) of an earlier run: keep its rows for the "
        "(method, rho, noise, seed) cells this run does not compute",
    )
    preset = parser.parse_known_args(argv)[0].preset
    if preset:
        parser.set_defaults(**PRESETS[preset])
    args = parser.parse_args(argv)

    common = {
        "epochs": args.epochs,
        "n_max": args.n_max,
        "device": args.device,
        "threads": args.threads,
        "data_root": args.data_root,
        "search_loss": args.search_loss,
        "meta_interval": args.meta_interval,
    }
    cells = [(rho, noise) for rho in args.rho for noise in args.noise]
    started = time.perf_counter()
    searches: list[dict] = []
    if {"searched", "searched_cheap"} & set(args.methods):
        search_jobs = [
            {
                **common,
                "rho": rho,
                "noise": noise,
                "trials": args.trials,
                "trial_epochs": args.trial_epochs,
                "search_scope": args.search_scope,
            }
            for rho, noise in cells
        ]
        searches = _map(run_search_job, search_jobs, args.workers)
    points = {(s["rho"], s["noise"]): s["point"] for s in searches}
    jobs = [
        {
            **common,
            "method": method,
            "rho": rho,
            "noise": noise,
            "seed": seed,
            "point": points.get((rho, noise)),
        }
        for rho, noise in cells
        for seed in args.seeds
        for method in args.methods
    ]
    rows = earlier_rows(
        args.rows_from, jobs, lambda r: (r["method"], r["rho"], r["noise"], r["seed"])
    )
    rows += _map(run_one, jobs, args.workers)
    elapsed = time.perf_counter() - started
    table = summarise(rows, args.methods)
    device = rows[0]["device"] if rows else args.device
    searched = "; ".join(
        f"ρ={s['rho']:g}, {round(100 * s['noise'])}%: {s['spec_name']} (lr {s['point']['lr']:.2g})"
        for s in searches
    )
    note = (
        "Fashion-MNIST, long tail then symmetric noise, `small_cnn`, "
        + (f"at most {args.n_max} images per class, " if args.n_max else "")
        + f"{args.epochs} epochs for every method, seeds {args.seeds}; search: {args.trials} "
        f"TPE trials of {args.trial_epochs} epochs per cell ({args.search_scope} meta-gradient), "
        f"scored on the meta split; searched/largest V train on `{args.search_loss}`; "
        "searched_cheap = last-layer "
        f"meta-gradient, V updated every {args.meta_interval} steps. Device {device} "
        f"({args.workers} parallel runs), {elapsed / 60:.0f} min, measured "
        f"{time.strftime('%Y-%m-%d')}. Searched V: {searched or '–'}. "
        f"Reproduce: `python benchmarks/reweighting.py{' --preset ' + preset if preset else ''}`."
    )
    write_results(
        args.out,
        "reweighting",
        note=note,
        table=table,
        payload={
            "elapsed_s": elapsed,
            "args": {k: str(v) for k, v in vars(args).items()},
            "searches": searches,
            "rows": rows,
        },
        markers=MARKERS if args.update_docs else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
