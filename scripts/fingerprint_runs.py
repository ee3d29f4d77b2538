"""Train a fixed set of small runs of every bundled config; fingerprint the weights they end with.

A refactoring that must not change behaviour (issue 12's package-per-method layout) is checked by
running this script before and after it and comparing the two JSON files: every run must end with
bit-identical weights. Each run goes through the public command line (``autorobust train`` /
``autorobust search ...``), so the script works on any version of the code. The sizes are shrunk
with ``--set`` overrides so that the whole set takes a few minutes on one CPU thread; every code
path a bundled config takes (its method, loss, search kind) is still exercised.

    python scripts/fingerprint_runs.py --out /tmp/after.json --compare scripts/fingerprints.json

The fingerprint of a run is the SHA-256 of the tensors of its selected (``best_model``) and last
(``model``) weights in the run's ``checkpoint.pt``, read with ``weights_only=True``. Weights are
bit-identical only on the same machine, torch build and thread count: compare files made there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

FASHION = ["--set", "shift.n_max=300"]
TINY_DARTS = [
    "--set", "architecture.search_layers=2", "--set", "architecture.search_channels=4",
    "--set", "architecture.eval_layers=2", "--set", "architecture.eval_channels=4",
    "--set", "architecture.batch_size=16", "--set", "architecture.fitness_epochs=1",
    "--set", "search.n_trials=2", "--set", "search.n_startup_trials=1", "--set", "train.epochs=1",
]  # fmt: skip

# name -> (command line after `autorobust`, the run directory holding the final weights)
RUNS: dict[str, tuple[list[str], str]] = {
    "train-demo": (["train", "demo", "--set", "train.epochs=3"], "."),
    "train-demo-reweight": (["train", "demo-reweight", "--set", "train.epochs=2"], "."),
    "search-baseline-demo": (
        ["search", "baseline", "demo", "--set", "search.n_trials=3", "--set",
         "search.trial_epochs=2", "--set", "train.epochs=2"],
        "best",
    ),
    "search-reweighter-demo-reweight": (
        ["search", "reweighter", "demo-reweight", "--set", "search.n_trials=2", "--set",
         "search.trial_epochs=2", "--set", "train.epochs=2"],
        "best",
    ),
    "search-loss-digits-lt20-autobalance": (
        ["search", "loss", "digits-lt20-autobalance", "--set", "train.epochs=5"], "best"
    ),
    "search-architecture-csnas-digits": (
        ["search", "architecture", "csnas-digits", "--set", "search.n_trials=2",
         "--set", "architecture.fitness_epochs=1", "--set", "train.epochs=1"],
        "best",
    ),
    "train-fashion-mnist-lt100-sym40": (
        ["train", "fashion-mnist-lt100-sym40", "--set", "train.epochs=1", *FASHION], "."
    ),
    "train-fashion-mnist-lt100-sym40-reweight": (
        ["train", "fashion-mnist-lt100-sym40-reweight", "--set", "train.epochs=1", *FASHION], "."
    ),
    "search-loss-fashion-mnist-lt100-autobalance": (
        ["search", "loss", "fashion-mnist-lt100-autobalance", "--set", "train.epochs=4", *FASHION],
        "best",
    ),
    "search-loss-fashion-mnist-lt100-sym20-autobalance": (
        ["search", "loss", "fashion-mnist-lt100-sym20-autobalance", "--set", "train.epochs=4",
         *FASHION],
        "best",
    ),
    "search-architecture-csnas-fashion-mnist": (
        ["search", "architecture", "csnas-fashion-mnist", *TINY_DARTS, *FASHION], "best"
    ),
    "search-architecture-csnas-fashion-mnist-lt100": (
        ["search", "architecture", "csnas-fashion-mnist-lt100", *TINY_DARTS, *FASHION], "best"
    ),
    # Every reference design (each treatment and loss family) and three of TPE's proposals.
    "design-demo": (
        ["design", "demo", "--set", "train.epochs=4", "--set", "design.max_trials=10",
         "--set", "design.budget=20", "--set", "design.ensemble=false",
         "--set", "model.options.width=8"],
        "best",
    ),
}  # fmt: skip


def fingerprint(checkpoint: Path) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the best and last weights."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for key in ("best_model", "model"):
        for name, tensor in sorted(state[key].items()):
            digest.update(f"{key}.{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def run_all(names: list[str], work: Path) -> dict[str, str]:
    """Run the named runs under ``work``; return {name: fingerprint}."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = {}
    for name in names:
        argv, final = RUNS[name]
        run_dir = work / name
        command = [sys.executable, "-m", "autorobust.cli", *argv, "--run-dir", str(run_dir),
                   "--device", "cpu", "--no-progress"]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-2000:]}")
        result[name] = fingerprint(run_dir / final / "checkpoint.pt")
        print(f"{name}: {result[name][:16]}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--compare", type=Path, help="an earlier JSON file: exit 1 on a change")
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=sorted(RUNS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        result = run_all(args.runs, Path(work))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if args.compare is None:
        return 0
    earlier = json.loads(args.compare.read_text())
    changed = sorted(name for name in result if earlier.get(name) != result[name])
    for name in changed:
        print(f"CHANGED {name}: {earlier.get(name)} -> {result[name]}")
    print(f"{len(result) - len(changed)} of {len(result)} runs bit-identical")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
