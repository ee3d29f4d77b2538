"""One search worker process for the multi-worker tests.

Usage: ``python _worker.py URL STUDY N_TRIALS [--seed S] [--block]``. Runs
:func:`autorobust.search.runner.run_study` with 1 s heartbeats and a 2 s grace period on a small
numpy quadratic. With ``--block`` the first trial prints ``in-trial NUMBER`` and then waits on
stdin, which the test never writes to: the test kills the process while its trial is running.
On exit the worker prints whether torch was imported (it must not be: workers stay light).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import optuna

from autorobust.search.runner import SearchSettings, run_study, study_state_counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("study")
    parser.add_argument("n_trials", type=int)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--block", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    # A fixed symmetric positive definite matrix: the objective is the concave quadratic
    # -(v^T A v) with v = (x - 1, y + 2, 0, ...), maximal at x = 1, y = -2.
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((64, 64))
    spd = basis @ basis.T / 64 + np.eye(64)
    blocked = False

    def objective(trial: optuna.Trial) -> float:
        nonlocal blocked
        x = trial.suggest_float("x", -5.0, 5.0)
        y = trial.suggest_float("y", -5.0, 5.0)
        if args.block and not blocked:
            blocked = True
            print(f"in-trial {trial.number}", flush=True)
            sys.stdin.read()  # the test sends nothing: this waits until the process is killed
        v = np.zeros(64)
        v[:2] = (x - 1.0, y + 2.0)
        return float(-(v @ spd @ v))

    settings = SearchSettings(
        study_name=args.study,
        n_trials=args.n_trials,
        storage=args.url,
        seed=args.seed,
        n_startup_trials=4,
        heartbeat_interval=1,
        grace_period=2,
    )
    # run_dir only locates the default SQLite file; the storage URL is explicit here.
    study = run_study(objective, settings, run_dir=Path("."))
    print(f"counts {study_state_counts(study)}", flush=True)
    print(f"torch imported: {'torch' in sys.modules}", flush=True)


if __name__ == "__main__":
    main()
