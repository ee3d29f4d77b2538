"""Several worker processes share one study; one is killed with SIGKILL in the middle of a trial.

The other workers must notice the dead worker's trial by its stale heartbeat, mark it FAIL,
re-run a copy with the same parameters, and finish with exactly ``N_TRIALS`` complete trials. The
PostgreSQL variant is the deployment this is for; the SQLite variant checks the same logic where
no PostgreSQL server is installed.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autorobust.search.runner import study_state_counts

WORKER = Path(__file__).with_name("_worker.py")
N_TRIALS = 12
# Whole-scenario bound, so a bug can fail the test but never hang CI.
TIMEOUT_S = 120.0


def _spawn(url: str, study: str, *, seed: int, block: bool = False) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(WORKER), url, study, str(N_TRIALS), "--seed", str(seed)]
    return subprocess.Popen(
        [*cmd, "--block"] if block else cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _first_line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    if not ready:
        pytest.fail("the blocking worker never reported that it entered a trial")
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"the blocking worker exited before its trial: {err.strip()[-2000:]}")
    return line


def _kill_one_worker_of_three(url: str, study_name: str) -> tuple[int, list[str]]:
    """Run the scenario; return the killed trial's number and the survivors' stdout."""
    deadline = time.monotonic() + TIMEOUT_S
    procs: list[subprocess.Popen[str]] = []
    try:
        # The doomed worker starts alone, so its trial exists before the others can finish.
        doomed = _spawn(url, study_name, seed=1, block=True)
        procs.append(doomed)
        line = _first_line(doomed, deadline)
        assert line.startswith("in-trial ")
        killed_number = int(line.split()[1])
        survivors = [_spawn(url, study_name, seed=2), _spawn(url, study_name, seed=3)]
        procs += survivors
        os.kill(doomed.pid, signal.SIGKILL)
        assert doomed.wait(timeout=30) == -signal.SIGKILL
        outputs = []
        for proc in survivors:
            try:
                out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logs = [_kill_and_collect(other) for other in survivors]
                pytest.fail(f"workers did not finish within {TIMEOUT_S} s; stderr: {logs}")
            assert proc.returncode == 0, err[-3000:]
            outputs.append(out)
        return killed_number, outputs
    finally:
        for proc in procs:
            _kill_and_collect(proc)


def _kill_and_collect(proc: subprocess.Popen[str]) -> str:
    """Kill ``proc`` if it still runs and return the tail of its stderr."""
    if proc.poll() is None:
        proc.kill()
    try:
        _, err = proc.communicate(timeout=30)
    except ValueError:  # streams already read to the end by an earlier communicate()
        return ""
    return (err or "")[-2000:]


def _check_study(url: str, study_name: str, killed_number: int) -> None:
    study = optuna.load_study(study_name=study_name, storage=url)
    trials = study.get_trials(deepcopy=False)
    counts = study_state_counts(study)
    assert counts["COMPLETE"] == N_TRIALS, counts
    assert counts["RUNNING"] == counts["WAITING"] == counts["PRUNED"] == 0, counts
    assert counts["COMPLETE"] + counts["FAIL"] == len(trials)
    assert sorted(trial.number for trial in trials) == list(range(len(trials)))

    killed = trials[killed_number]
    assert killed.state == TrialState.FAIL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        retry_cls = retry_cls or optuna.storages.RetryFailedTrialCallback
        retries = [t for t in trials if retry_cls.retried_trial_number(t) == killed_number]
    # Exactly one copy ran (max_retry allows more only if the copy died too), with the same
    # parameters, and it is the only complete trial with those parameters.
    assert [t.state for t in retries] == [TrialState.COMPLETE]
    assert retries[0].params == killed.params
    assert (
        sum(1 for t in trials if t.state == TrialState.COMPLETE and t.params == killed.params) == 1
    )
    # Every other failure is a trial that lost the budget race and never ran the objective.
    for trial in trials:
        if trial.state == TrialState.FAIL and trial.number != killed_number:
            assert trial.user_attrs["fail_reason"].startswith("not run: other workers")


@pytest.mark.postgres
def test_killed_worker_trial_is_retried_postgres(postgres_url: str) -> None:
    killed_number, outputs = _kill_one_worker_of_three(postgres_url, "kill-one-worker")
    _check_study(postgres_url, "kill-one-worker", killed_number)
    for out in outputs:
        assert "torch imported: False" in out


@pytest.mark.slow
def test_killed_worker_trial_is_retried_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    killed_number, outputs = _kill_one_worker_of_three(url, "kill-one-worker")
    _check_study(url, "kill-one-worker", killed_number)
    for out in outputs:
        assert "torch imported: False" in out
