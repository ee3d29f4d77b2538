"""Benchmark: AutoBalance's inverse-Hessian solvers on the project's protocol (issue 14, item 5).

Which solver should be the default: the authors' fixed 5-term Neumann series, a Neumann series
whose length adapts until the relative term norm is below a tolerance, or conjugate gradients?
Two measurements on Fashion-MNIST long tail ρ = 100 (the bundled fashion-mnist-lt100-autobalance
config, ``n_max`` reduced so that it runs in minutes on one CPU thread):

1. **Per upper step** (``--part steps``): one bilevel run; at every upper step each candidate
   solver computes the hypergradient of the same problem (same weights, same batches) and is
   compared with the exact solve (the dense 650 x 650 Hessian of the head): relative error,
   cosine, Hessian-vector products and CPU time (``time.process_time``) of the hypergradient. The
   run itself follows ``--follow`` (default: the configured default solver).
2. **End to end** (``--part runs``): the whole search (one bilevel run) plus the retraining for
   each candidate, and the retrained model's balanced / worst-class test accuracy.

    OMP_NUM_THREADS=1 python benchmarks/hypergradient_solvers.py            # both parts
    OMP_NUM_THREADS=1 python benchmarks/hypergradient_solvers.py --part steps --n-max 1000

Writes benchmarks/results/hypergradient_solvers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import add_run_arguments, run_overrides, write_results

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = "fashion-mnist-lt100-autobalance"
# name -> bilevel overrides
CANDIDATES: dict[str, dict] = {
    "neumann J=5 (old default)": {"hypergradient": "neumann", "neumann_terms": 5},
    "neumann tol 1e-2": {
        "hypergradient": "neumann",
        "neumann_tol": 1e-2,
        "neumann_terms": 2000,
    },
    "neumann tol 1e-3": {
        "hypergradient": "neumann",
        "neumann_tol": 1e-3,
        "neumann_terms": 5000,
    },
    "cg tol 1e-2": {"hypergradient": "cg", "cg_tol": 1e-2, "cg_iterations": 200},
    "cg tol 1e-4": {"hypergradient": "cg", "cg_tol": 1e-4, "cg_iterations": 200},
    "cg tol 1e-6": {"hypergradient": "cg", "cg_tol": 1e-6, "cg_iterations": 200},
}


def _config(args: argparse.Namespace, run_dir: str, bilevel: dict):
    from autorobust.config import load_config

    job = {
        "seed": args.seed,
        "device": args.device,
        "epochs": args.epochs,
        "data_root": args.data_root,
        "noise": 0.0,
    }
    overrides = [*run_overrides(job, run_dir), f"shift.n_max={args.n_max}"]
    overrides += [f"bilevel.{key}={value}" for key, value in bilevel.items()]
    return load_config(CONFIG, overrides)


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in tensors])


def per_step(args: argparse.Namespace) -> list[dict]:
    """Part 1: every candidate against the exact solve at every upper step of one run."""
    from autorobust.data.tensors import resolve_device
    from autorobust.experiment import build_model, build_splits
    from autorobust.methods.autobalance.hypergradient import implicit_hypergradient
    from autorobust.methods.autobalance.split import split_for_bilevel
    from autorobust.methods.autobalance.trainer import BilevelTrainer, bilevel_loss

    rows: list[dict] = []

    class Probe(BilevelTrainer):
        def upper_step(self, step: int):
            with self.hyper_problem(step) as problem:
                args_ = (problem.train_loss, problem.val_loss, problem.params, problem.alpha)
                exact = _flat(implicit_hypergradient(*args_, solver="exact").grads)
                for name, overrides in CANDIDATES.items():
                    cfg = self.bilevel.model_copy(update=overrides)
                    saved, self.bilevel = self.bilevel, cfg
                    started = time.process_time()
                    result = self.hypergradient(problem)
                    seconds = time.process_time() - started
                    self.bilevel = saved
                    got = _flat(result.grads)
                    rows.append(
                        {
                            "step": step,
                            "candidate": name,
                            "relative_error": float((got - exact).norm() / exact.norm()),
                            "cosine": float(torch.nn.functional.cosine_similarity(got, exact, 0)),
                            "hvps": result.hvps,
                            "cpu_ms": 1000 * seconds,
                            "skipped": result.skipped,
                            "events": result.events,
                            "solver": result.solver,
                        }
                    )
            return super().upper_step(step)

    with tempfile.TemporaryDirectory() as run_dir:
        config = _config(args, run_dir, CANDIDATES[args.follow])
        splits = build_splits(config)
        train_part, val_part = split_for_bilevel(config, splits)
        counts = np.bincount(train_part.labels, minlength=splits.num_classes)
        trainer = Probe(
            bilevel=config.bilevel,
            train_data=train_part,
            val_data=val_part,
            model=build_model(config, splits),
            loss=bilevel_loss(config.bilevel, counts),
            settings=config.train,
            device=resolve_device(config.device),
            seed=config.seed,
            run_dir=Path(run_dir),
        )
        trainer.fit(train_part, val_part)
    return rows


def end_to_end(args: argparse.Namespace) -> list[dict]:
    """Part 2: search + retraining with each candidate; test accuracy of the retrained model."""
    from autorobust.methods.autobalance.search import run_search

    rows = []
    for name, overrides in CANDIDATES.items():
        with tempfile.TemporaryDirectory() as run_dir:
            config = _config(args, run_dir, overrides)
            started = time.process_time()
            outcome = run_search(config, default_study_name="hypergradient-solvers")
            cpu = time.process_time() - started
            learned = json.loads((Path(run_dir) / "learned_loss.json").read_text())
        method, test = learned["method"], outcome.retrained.metrics["test"]
        rows.append(
            {
                "candidate": name,
                "balanced_accuracy": test["balanced_accuracy"],
                "worst_class_accuracy": test["worst_class_accuracy"],
                "search_seconds": learned["seconds"],
                "cpu_seconds": cpu,
                "upper_steps": method["upper_steps"],
                "skipped_steps": method["skipped_steps"],
                "guarded_steps": method["guarded_steps"],
                "hvps_per_step": method["hvps_per_step"],
                "offset": learned["options"]["offset"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def summarise(steps: list[dict], runs: list[dict]) -> str:
    """Markdown: per candidate, the per-step error and cost (median and worst) and the end-to-end
    accuracy."""
    header = [
        "solver",
        "rel. error median",
        "rel. error max",
        "cosine min",
        "HVPs / step median",
        "HVPs / step max",
        "CPU ms / step median",
        "skipped steps",
        "bal. acc.",
        "worst-class acc.",
        "search s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in CANDIDATES:
        mine = [r for r in steps if r["candidate"] == name]
        run = next((r for r in runs if r["candidate"] == name), None)
        cells = [name]
        if mine:
            delivered = [r for r in mine if r["skipped"] is None]
            errors = np.array([r["relative_error"] for r in delivered] or [np.nan])
            cells += [
                f"{np.median(errors):.2g}",
                f"{errors.max():.2g}",
                f"{min([r['cosine'] for r in delivered] or [np.nan]):.3f}",
                f"{np.median([r['hvps'] for r in mine]):.0f}",
                f"{max(r['hvps'] for r in mine)}",
                f"{np.median([r['cpu_ms'] for r in mine]):.0f}",
                f"{len(mine) - len(delivered)} of {len(mine)}",
            ]
        else:
            cells += ["–"] * 7
        if run:
            cells += [
                f"{100 * run['balanced_accuracy']:.1f}",
                f"{100 * run['worst_class_accuracy']:.1f}",
                f"{run['search_seconds']:.0f}",
            ]
        else:
            cells += ["–"] * 3
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["steps", "runs", "both"], default="both")
    parser.add_argument("--n-max", type=int, default=1000, help="images of the largest class")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--follow", choices=list(CANDIDATES), default="cg tol 1e-4")
    add_run_arguments(parser, RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    steps = per_step(args) if args.part in ("steps", "both") else []
    runs = end_to_end(args) if args.part in ("runs", "both") else []
    note = (
        f"Fashion-MNIST long tail rho=100, n_max={args.n_max}, `small_cnn`, {args.epochs} "
        f"epochs, seed {args.seed}, {args.device}, {args.threads} thread(s); per-step columns "
        f"over the {len({r['step'] for r in steps})} upper steps of one run following "
        f"'{args.follow}' (error against the exact solve of the head's Hessian; skipped steps "
        "excluded from the error columns); accuracy columns: search + retraining with that "
        f"solver. Measured {time.strftime('%Y-%m-%d')}; reproduce: "
        f"`OMP_NUM_THREADS=1 python benchmarks/hypergradient_solvers.py --n-max {args.n_max} "
        f"--epochs {args.epochs} --threads {args.threads}`."
    )
    write_results(
        args.out,
        "hypergradient_solvers",
        note=note,
        table=summarise(steps, runs),
        payload={"elapsed_s": time.perf_counter() - started, "steps": steps, "runs": runs},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
