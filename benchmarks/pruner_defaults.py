"""The median pruner's warm-up and start-up defaults, replayed on searches that were not pruned.

Each job runs a search of a bundled demo config with the pruner switched off (``search.pruner:
none``), so that every trial trains its whole budget and reports its validation balanced accuracy
after every epoch. The median pruner is then replayed on these learning curves, in trial order,
for every (warm-up epochs, start-up trials) setting: trial k is stopped at the first epoch e at or
after the warm-up, once at least ``start-up`` earlier trials have completed, at which its best
value so far is below the median of the completed trials' values at epoch e (Optuna's
``MedianPruner``). A replay does not see how TPE would have proposed differently after a pruned
trial; it measures what the pruner decides on the same trials.

For every setting it reports the trials pruned (and how many after their first epoch), the epochs
trained as a share of the unpruned search, the best score kept, and the good trials lost: pruned
trials that would have ended within one point of the best trial of the unpruned search.

    python benchmarks/pruner_defaults.py                  # about 15 minutes on 2 CPU cores
    python benchmarks/pruner_defaults.py --update-docs  # and the table in docs/benchmarks.md

Results go to ``benchmarks/results/pruner_defaults.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import add_update_docs_flag, run_jobs, update_docs

RESULTS = Path(__file__).resolve().parent / "results"
MARKERS = ("<!-- pruner-benchmark:start -->", "<!-- pruner-benchmark:end -->")
WARMUPS = (0, 1, 3, 5)
STARTUPS = (5, 10)
GOOD = 0.01  # "good": within one point of the unpruned search's best balanced accuracy


def search_curves(job: dict[str, Any]) -> dict[str, Any]:
    """Run one unpruned search; return every complete trial's per-epoch validation values."""
    import optuna
    import torch

    from autorobust.config import load_config

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        config = load_config(
            job["config"],
            [f"run_dir={work}", f"seed={job['seed']}", "search.pruner=none", "device=cpu",
             "train.progress=false", "train.threads=1", *job["overrides"]],
        )  # fmt: skip
        started = time.perf_counter()
        if job["kind"] == "baseline":
            from autorobust.search.baseline import run_search
        else:
            from autorobust.methods.meta_weight_net.search import run_search
        run_search(config, retrain=False)
        study = optuna.load_study(study_name=job["kind"], storage=f"sqlite:///{work}/study.db")
        curves = [
            [trial.intermediate_values[e] for e in sorted(trial.intermediate_values)]
            for trial in study.get_trials(deepcopy=False)
            if trial.state == optuna.trial.TrialState.COMPLETE
        ]
    return {**job, "curves": curves, "seconds": time.perf_counter() - started}


def replay(curves: list[list[float]], warmup: int, startup: int) -> dict[str, Any]:
    """The median pruner's decisions on ``curves`` (trial order): epochs run and the kept scores."""
    completed: list[list[float]] = []
    pruned_at: list[int | None] = []
    for curve in curves:
        stop = None
        for epoch in range(len(curve)):
            if len(completed) < startup or epoch < warmup:
                continue
            median = statistics.median(other[epoch] for other in completed)
            if max(curve[: epoch + 1]) < median:
                stop = epoch
                break
        pruned_at.append(stop)
        if stop is None:
            completed.append(curve)
    best_unpruned = max(max(curve) for curve in curves)
    pruned = [i for i, stop in enumerate(pruned_at) if stop is not None]
    return {
        "pruned": len(pruned),
        "pruned_after_first_epoch": sum(1 for stop in pruned_at if stop == 0),
        "epochs": sum(
            len(curve) if stop is None else stop + 1
            for curve, stop in zip(curves, pruned_at, strict=True)
        ),
        "best": max(max(curve) for curve in completed),
        "good_lost": sum(1 for i in pruned if max(curves[i]) >= best_unpruned - GOOD),
    }


JOBS = [
    {"kind": "baseline", "config": "demo", "seed": seed, "overrides": []} for seed in (0, 1, 2, 3)
] + [
    {"kind": "reweighter", "config": "demo-reweight", "seed": seed, "overrides": []}
    for seed in (0, 1)
]


def _good(curves: list[list[float]]) -> int:
    best = max(max(curve) for curve in curves)
    return sum(1 for curve in curves if max(curve) >= best - GOOD)


def summarise(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    rows = []
    for kind in sorted({r["kind"] for r in results}):
        runs = [r for r in results if r["kind"] == kind]
        for startup in STARTUPS:
            for warmup in WARMUPS:
                replays = [replay(r["curves"], warmup, startup) for r in runs]
                total = sum(sum(len(c) for c in r["curves"]) for r in runs)
                rows.append(
                    {
                        "kind": kind,
                        "startup": startup,
                        "warmup": warmup,
                        "trials": sum(len(r["curves"]) for r in runs),
                        "pruned": sum(p["pruned"] for p in replays),
                        "pruned_after_first_epoch": sum(
                            p["pruned_after_first_epoch"] for p in replays
                        ),
                        "epochs_share": sum(p["epochs"] for p in replays) / total,
                        "best_lost": statistics.mean(
                            max(max(c) for c in r["curves"]) - p["best"]
                            for r, p in zip(runs, replays, strict=True)
                        ),
                        "good_lost": sum(p["good_lost"] for p in replays),
                        "good": sum(_good(r["curves"]) for r in runs),
                    }
                )
    lines = [
        "| search | start-up trials | warm-up epochs | pruned / trials | pruned after epoch 1 "
        "| epochs trained | best lost (points) | good trials lost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['kind']} | {row['startup']} | {row['warmup']} | "
            f"{row['pruned']} / {row['trials']} | {row['pruned_after_first_epoch']} | "
            f"{100 * row['epochs_share']:.0f}% | {100 * row['best_lost']:.2f} | "
            f"{row['good_lost']} of {row['good']} |"
        )
    return rows, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    add_update_docs_flag(parser)
    parser.add_argument(
        "--summarise-only",
        action="store_true",
        help="replay the curves saved in OUT/pruner_defaults.json instead of running searches",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = []
    if args.summarise_only:
        saved = json.loads((args.out / "pruner_defaults.json").read_text())
        results, seconds = saved["runs"], saved["seconds"]
    else:
        for result in run_jobs(search_curves, JOBS, args.workers):
            print(f"{result['kind']} seed {result['seed']}: {result['seconds']:.0f} s", flush=True)
            results.append(result)
        seconds = time.perf_counter() - started
    rows, table = summarise(results)
    searches = ", ".join(
        f"{kind} ({sum(1 for r in results if r['kind'] == kind)} seeds)"
        for kind in sorted({r["kind"] for r in results})
    )
    note = (
        f"Unpruned searches replayed: {searches}, bundled configs `demo` (20 trials of 30 "
        "epochs) and `demo-reweight` (12 trials of 8 epochs), 1 thread, "
        f"{seconds:.0f} s in all (2 CPU cores shared with other jobs), measured "
        f"{time.strftime('%Y-%m-%d')}. Best lost: the best unpruned score minus the best one the "
        "pruner kept, in points, mean over seeds; good trials: within 1 point of the best trial "
        "of the unpruned search. Reproduce: `python benchmarks/pruner_defaults.py`."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pruner_defaults.json").write_text(
        json.dumps({"note": note, "seconds": seconds, "rows": rows, "runs": results}, indent=1)
        + "\n"
    )
    (args.out / "pruner_defaults.md").write_text(note + "\n\n" + table + "\n")
    print(note + "\n\n" + table)
    if args.update_docs:
        update_docs(MARKERS, table, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
