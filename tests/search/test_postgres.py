"""Several worker processes start at the same instant on a fresh study; one is killed mid-trial.

Each repeat creates a fresh storage (a new SQLite file or a new PostgreSQL database), starts three
workers, releases them at the same moment (they all wait for a line on stdin), and SIGKILLs one of
them halfway through writing a checkpoint of its first trial. Every worker must open the study
(no creation race), the study's first trial must be enqueued once, the other workers must notice
the dead trial by its stale heartbeat, mark it FAIL with a reason, and run a copy that resumes in
the dead trial's folder from its checkpoint (epoch 2, not 0) after deleting the partial write, to
the value an uninterrupted run gives; the study ends with exactly ``N_TRIALS`` complete trials.
The PostgreSQL variant is the deployment this is for; the SQLite variant checks the same logic
where no PostgreSQL server is installed.
"""

from __future__ import annotations

import importlib.util
import os
import select
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autorobust.search.runner import study_state_counts

WORKER = Path(__file__).with_name("_worker.py")
N_TRIALS = 8
REPEATS = 3
# Whole-scenario bound, so a bug can fail the test but never hang CI.
TIMEOUT_S = 120.0

_spec = importlib.util.spec_from_file_location("search_worker", WORKER)
assert _spec is not None and _spec.loader is not None
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def _spawn(url: str, study: str, root: Path, *, seed: int, flag: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(WORKER), url, study, str(N_TRIALS), str(root), "--seed", str(seed)]
    return subprocess.Popen(
        [*cmd, flag] if flag else cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_line(proc: subprocess.Popen[str], deadline: float, what: str) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    if not ready:
        pytest.fail(f"a worker never printed {what}")
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"a worker exited before printing {what}: {err.strip()[-2000:]}")
    return line.strip()


def _start_together(
    url: str, study: str, root: Path, *, workers: int = 3, kill_one: bool = True
) -> tuple[int | None, list[str]]:
    """Run the scenario; return the killed trial's number (None: none killed) and the
    survivors' stdout."""
    deadline = time.monotonic() + TIMEOUT_S
    # The survivors train their first trial only once the doomed worker is stuck in its own.
    procs = [_spawn(url, study, root, seed=1, flag="--block" if kill_one else "")]
    flag = "--after-block" if kill_one else ""
    procs += [_spawn(url, study, root, seed=1, flag=flag) for _ in range(workers - 1)]
    survivors = procs[1:] if kill_one else procs
    try:
        for proc in procs:
            assert _read_line(proc, deadline, "ready") == "ready"
        for proc in procs:  # the start signal, to every worker at the same moment
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        killed_number = None
        if kill_one:
            doomed = procs[0]
            line = _read_line(doomed, deadline, "in-trial")
            assert line.startswith("in-trial ")
            killed_number = int(line.split()[1])
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


def _check_study(url: str, study_name: str, root: Path) -> list[optuna.trial.FrozenTrial]:
    """Checks of every scenario: the budget, the first trial, distinct proposals."""
    study = optuna.load_study(study_name=study_name, storage=url)
    trials = study.get_trials(deepcopy=False)
    counts = study_state_counts(study)
    assert counts["COMPLETE"] == N_TRIALS, counts
    assert counts["RUNNING"] == counts["WAITING"] == counts["PRUNED"] == 0, counts
    assert counts["COMPLETE"] + counts["FAIL"] == len(trials)
    assert sorted(trial.number for trial in trials) == list(range(len(trials)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried_number = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
        originals = [t for t in trials if retried_number(t) is None]
    # The workers started together enqueued the study's first trial once, and, although they
    # share a seed, never proposed the same point twice.
    assert sum(1 for t in originals if t.params == worker.FIRST) == 1
    points = [tuple(sorted(t.params.items())) for t in originals if t.params]
    assert len(set(points)) == len(points)
    # No partial write, no checkpoint left behind.
    leftovers = sorted(p.name for p in (root / "trials").rglob("*") if p.is_file())
    assert leftovers == [], leftovers
    return trials


def _check_killed(trials: list[optuna.trial.FrozenTrial], killed_number: int, root: Path) -> None:
    """Checks of the killed worker's trial and its retry."""
    killed = trials[killed_number]
    assert killed.state == TrialState.FAIL
    assert killed.user_attrs["fail_reason"] == (
        f"worker stopped sending heartbeats (killed?): none for more than {worker.GRACE_S} s"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried_number = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
        retries = [t for t in trials if retried_number(t) == killed_number]
    # Exactly one copy ran (max_retry allows more only if the copy died too), with the same
    # parameters, and it is the only complete trial with those parameters.
    assert [t.state for t in retries] == [TrialState.COMPLETE]
    retry = retries[0]
    assert retry.params == killed.params
    assert (
        sum(1 for t in trials if t.state == TrialState.COMPLETE and t.params == killed.params) == 1
    )
    # It resumed in the dead trial's folder from the checkpoint of epoch 2, and its result is
    # the uninterrupted one, to the bit.
    assert "fail_reason" not in retry.user_attrs
    assert retry.user_attrs["resumed_from_trial"] == killed_number
    assert retry.user_attrs["resumed_from_epoch"] == 2
    assert retry.value == worker.uninterrupted_value(**killed.params)
    assert not (root / "trials" / f"trial-{killed_number:04d}").exists()
    assert (root / "trials" / f"trial-{retry.number:04d}").is_dir()
    # Every other failure is a trial that lost the budget race and never ran the objective.
    for trial in trials:
        if trial.state == TrialState.FAIL and trial.number != killed_number:
            assert trial.user_attrs["fail_reason"].startswith("not run: other workers")


def _repeat(
    new_url: Callable[[Path], str], tmp_path: Path, *, workers: int = 3, kill_one: bool = True
) -> None:
    for repeat in range(REPEATS):
        root = tmp_path / f"repeat-{repeat}"
        root.mkdir()
        url = new_url(root)
        killed_number, outputs = _start_together(
            url, "together", root, workers=workers, kill_one=kill_one
        )
        trials = _check_study(url, "together", root)
        if killed_number is not None:
            _check_killed(trials, killed_number, root)
        for out in outputs:
            assert "torch imported: False" in out


@pytest.mark.postgres
def test_workers_started_together_and_a_killed_one_postgres(
    new_postgres_database: Callable[[], str], tmp_path: Path
) -> None:
    _repeat(lambda root: new_postgres_database(), tmp_path)


@pytest.mark.slow
def test_workers_started_together_and_a_killed_one_sqlite(tmp_path: Path) -> None:
    _repeat(lambda root: f"sqlite:///{root / 'study.db'}", tmp_path)


def test_workers_started_together_all_run_sqlite(tmp_path: Path) -> None:
    # The quick variant for every run of the suite: no kill, so no grace period to wait out.
    _repeat(lambda root: f"sqlite:///{root / 'study.db'}", tmp_path, workers=3, kill_one=False)


def test_postgres_tests_skip_without_the_driver(tmp_path: Path) -> None:
    # A psycopg that cannot be imported, as on a machine installed without the postgres extra.
    hidden = tmp_path / "hidden" / "psycopg"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError(\"No module named 'psycopg'\")\n")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden.parent), str(root / "src")])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "postgres",
         str(Path(__file__).resolve())],
        cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 skipped" in done.stdout, done.stdout[-3000:]
    assert "the PostgreSQL driver psycopg is not installed" in done.stdout
    assert "pip install -e '.[postgres]'" in done.stdout
