"""One search worker process for the multi-worker tests.

Usage: ``python _worker.py URL STUDY N_TRIALS ROOT [--seed S] [--block]``. The worker imports
everything, prints ``ready`` and waits for a line on stdin: the test releases all workers at the
same instant by writing ``go`` to each. Then it runs :func:`autorobust.search.runner.run_study`
with 1 s heartbeats and a 5 s grace period on a small numpy objective that trains like a model:
:data:`EPOCHS` epochs of gradient descent on a quadratic, checkpointed after every epoch in the
trial's folder under ``ROOT/trials`` (with :func:`autorobust._io.write_json`, an atomic write), so
that a retried trial resumes where its dead predecessor stopped. Every worker passes the same
first trial (``FIRST``), which the study must hold once.

With ``--block`` the first trial checkpoints two epochs, starts writing the third checkpoint,
creates ``ROOT/blocked`` and prints ``in-trial NUMBER`` halfway through that write, and waits on
stdin, which the test never closes: the test kills the process there, leaving a partial temporary
file behind. With ``--after-block`` the first trial waits for ``ROOT/blocked`` before it trains, so
that fast workers cannot finish the whole study before the blocking one has a trial. On exit the
worker prints whether torch was imported (it must not be: workers stay light).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import IO

import numpy as np
import optuna

from autorobust._io import atomic_write, write_json
from autorobust.search.runner import (
    SearchSettings,
    run_study,
    study_state_counts,
    take_over_trial_dir,
)

EPOCHS = 3
STEPS_PER_EPOCH = 50
FIRST = {"x": 1.5, "y": -1.5}
CHECKPOINT = "checkpoint.json"
GRACE_S = 5


def _quadratic() -> np.ndarray:
    # A fixed symmetric positive definite matrix: the objective is the concave quadratic
    # -(v^T A v) with v = (x - 1, y + 2, 0, ...), maximal at x = 1, y = -2.
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((64, 64))
    return basis @ basis.T / 64 + np.eye(64)


SPD = _quadratic()


def train_epoch(point: np.ndarray) -> np.ndarray:
    """One "epoch": STEPS_PER_EPOCH gradient steps of -(v^T A v) towards its maximum."""
    for _ in range(STEPS_PER_EPOCH):
        point = point - 0.01 * 2.0 * (SPD @ point)
    return point


def value(point: np.ndarray) -> float:
    return float(-(point @ SPD @ point))


def uninterrupted_value(x: float, y: float) -> float:
    """The objective of (x, y) trained without interruption (what a resumed trial must give)."""
    point = np.zeros(64)
    point[:2] = (x - 1.0, y + 2.0)
    for _ in range(EPOCHS):
        point = train_epoch(point)
    return value(point)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("study")
    parser.add_argument("n_trials", type=int)
    parser.add_argument("root", type=Path)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--block", action="store_true")
    parser.add_argument("--after-block", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    blocked = False
    waited = not args.after_block

    def objective(trial: optuna.Trial) -> float:
        nonlocal blocked, waited
        x = trial.suggest_float("x", -5.0, 5.0)
        y = trial.suggest_float("y", -5.0, 5.0)
        if not waited:
            waited = True
            _wait_for(args.root / "blocked")
        folder = args.root / "trials" / f"trial-{trial.number:04d}"
        take_over_trial_dir(
            trial, folder, lambda number: args.root / "trials" / f"trial-{number:04d}"
        )
        checkpoint = folder / CHECKPOINT
        if checkpoint.is_file():
            state = json.loads(checkpoint.read_text())
            start, point = state["epoch"], np.asarray(state["point"])
            trial.set_user_attr("resumed_from_epoch", start)
        else:
            start, point = 0, np.zeros(64)
            point[:2] = (x - 1.0, y + 2.0)
        for epoch in range(start, EPOCHS):
            if args.block and not blocked and epoch == 2:
                blocked = True
                atomic_write(checkpoint, lambda handle: _stall(handle, trial.number, args.root))
            point = train_epoch(point)
            write_json(checkpoint, {"epoch": epoch + 1, "point": point.tolist()})
        checkpoint.unlink()
        return value(point)

    settings = SearchSettings(
        study_name=args.study,
        n_trials=args.n_trials,
        storage=args.url,
        seed=args.seed,
        n_startup_trials=4,
        pruner="none",
        heartbeat_interval=1,
        # Long enough that a worker slowed down by a loaded machine (its heartbeat thread starved,
        # the database busy) is not taken for dead: 2 s made the tests flaky under load.
        grace_period=GRACE_S,
    )
    print("ready", flush=True)
    sys.stdin.readline()  # the start signal: every worker gets it at the same moment
    # run_dir only locates the default SQLite file; the storage URL is explicit here.
    study = run_study(objective, settings, run_dir=args.root, first_params=FIRST)
    print(f"counts {study_state_counts(study)}", flush=True)
    print(f"torch imported: {'torch' in sys.modules}", flush=True)


def _stall(handle: IO[bytes], number: int, root: Path) -> None:
    handle.write(b'{"epoch": 3, "point": [0.1')  # half a checkpoint
    handle.flush()
    (root / "blocked").touch()
    print(f"in-trial {number}", flush=True)
    sys.stdin.read()  # the test never closes stdin: this waits until the process is killed


def _wait_for(path: Path, timeout_s: float = 120.0) -> None:
    """Wait (a barrier between processes, not a stand-in for work) until ``path`` exists."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.02)


if __name__ == "__main__":
    main()
