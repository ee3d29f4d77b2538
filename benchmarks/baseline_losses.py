"""Benchmark: every baseline loss on long-tailed Fashion-MNIST with 0/20/40% symmetric noise.

Protocol (issue 3): Fashion-MNIST, 100 clean images per class set aside as the meta / validation
split, long tail rho = 100 on the rest, then symmetric label noise; the plain 5-layer CNN
(`small_cnn`), 15 epochs, batch 128, SGD lr 0.05 with cosine decay, the same for every loss; the
epoch is selected on the clean validation split; 3 seeds. Reported on the balanced test split.

    python benchmarks/baseline_losses.py                  # the full table (63 runs)
    python benchmarks/baseline_losses.py --workers 4 --device cuda
    python benchmarks/baseline_losses.py --epochs 1 --seeds 0 --noise 0.4 --losses cross_entropy

Writes benchmarks/results/baseline_losses.{json,md} and, with --update-docs, the table in
docs/benchmarks.md between the baseline-benchmark markers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import add_run_arguments, run_jobs, run_overrides, write_results

RESULTS = Path(__file__).resolve().parent / "results"
MARKERS = ("<!-- baseline-benchmark:start -->", "<!-- baseline-benchmark:end -->")
LOSSES = (
    "cross_entropy",
    "focal",
    "class_balanced",
    "logit_adjustment",
    "ldam",
    "balanced_softmax",
    "generalized_ce",
)


def run_one(job: dict) -> dict:
    """Train one (loss, noise, seed) cell; returns its test metrics and timing."""
    import torch

    from autorobust.config import load_config
    from autorobust.experiment import train_run

    torch.set_num_threads(job["threads"])
    with tempfile.TemporaryDirectory() as run_dir:
        overrides = [*run_overrides(job, run_dir), f"loss.name={job['loss']}"]
        config = load_config("fashion-mnist-lt100-sym40", overrides)
        metrics = train_run(config).metrics
    test = metrics["test"]
    return {
        **{k: job[k] for k in ("loss", "noise", "seed", "epochs")},
        "balanced_accuracy": test["balanced_accuracy"],
        "worst_class_accuracy": test["worst_class_accuracy"],
        "accuracy": test["accuracy"],
        "few_shot_accuracy": test.get("few_shot_accuracy"),
        "seconds_per_epoch": metrics["run"]["seconds_per_epoch"],
        "best_epoch": metrics["run"]["best_epoch"],
        "train_size": metrics["data"]["train_size"],
        "device": metrics["run"]["device"],
    }


def summarise(rows: list[dict], losses: list[str], noises: list[float]) -> str:
    """Markdown table: balanced accuracy mean ± std, worst-class mean, seconds per epoch."""
    header = (
        ["loss"]
        + [f"bal. acc. {int(100 * n)}% noise" for n in noises]
        + [f"worst-class {int(100 * n)}%" for n in noises]
        + ["s / epoch"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for loss in losses:
        cells = [loss]
        mine = [r for r in rows if r["loss"] == loss]
        for key in ("balanced_accuracy", "worst_class_accuracy"):
            for noise in noises:
                values = np.array([r[key] for r in mine if r["noise"] == noise]) * 100
                if key == "balanced_accuracy":
                    cells.append(
                        f"{values.mean():.1f} ± {values.std():.1f}" if values.size else "–"
                    )
                else:
                    cells.append(f"{values.mean():.1f}" if values.size else "–")
        cells.append(f"{np.mean([r['seconds_per_epoch'] for r in mine]):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES))
    parser.add_argument("--noise", nargs="+", type=float, default=[0.0, 0.2, 0.4])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15)
    add_run_arguments(parser, RESULTS)
    parser.add_argument(
        "--rows-from",
        type=Path,
        help="JSON list of rows (or a results JSON) of an earlier, cut-short run: keep them and "
        "run only the missing (loss, noise, seed) cells",
    )
    args = parser.parse_args(argv)

    jobs = [
        {
            "loss": loss,
            "noise": noise,
            "seed": seed,
            "epochs": args.epochs,
            "device": args.device,
            "threads": args.threads,
            "data_root": args.data_root,
        }
        for noise in args.noise
        for loss in args.losses
        for seed in args.seeds
    ]
    rows = []
    if args.rows_from:
        earlier = json.loads(args.rows_from.read_text())
        rows = earlier["rows"] if isinstance(earlier, dict) else earlier
        done = {(r["loss"], r["noise"], r["seed"]) for r in rows}
        jobs = [j for j in jobs if (j["loss"], j["noise"], j["seed"]) not in done]
    started = time.perf_counter()
    for row in run_jobs(run_one, jobs, args.workers):
        rows.append(row)
        print(json.dumps(row), flush=True)
    elapsed = time.perf_counter() - started
    table = summarise(rows, args.losses, args.noise)
    device = ", ".join(sorted({r["device"] for r in rows})) or args.device
    note = (
        "Fashion-MNIST, long tail rho=100 then symmetric noise, `small_cnn`, "
        f"{args.epochs} epochs, "
        f"seeds {args.seeds}, device {device} ({args.workers} parallel runs), measured "
        f"{time.strftime('%Y-%m-%d')}; reproduce: `python benchmarks/baseline_losses.py`."
    )
    write_results(
        args.out,
        "baseline_losses",
        note=note,
        table=table,
        payload={"elapsed_s": elapsed, "rows": rows},
        markers=MARKERS if args.update_docs else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
