"""torch's thread count: ``train.threads`` / ``--threads``, and ``auto`` sharing the cores among
the autorobust processes that train on one machine (counted through flock'd files)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from autorobust import cli
from autorobust.config import load_config, validate_config
from autorobust.errors import ConfigError
from autorobust.experiment import config_fingerprint, train_run
from autorobust.train import threads
from autorobust.train.threads import apply_threads, count_processes, resolve_threads

HOLDER = """
import sys
from autorobust.train.threads import register_process
register_process(__import__("pathlib").Path(sys.argv[1]))
print("registered", flush=True)
sys.stdin.read()
"""


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _holder(folder: Path) -> subprocess.Popen[str]:
    """A process that registers in ``folder`` and waits (as a training worker would)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "registered"
    return proc


def test_auto_shares_the_cores_among_the_live_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 12)
    folder = tmp_path / "processes"
    assert resolve_threads("auto", folder=folder) == 12  # this process alone
    holders = [_holder(folder), _holder(folder)]
    try:
        assert count_processes(folder) == 3
        assert resolve_threads("auto", folder=folder) == 4
        os.kill(holders[0].pid, signal.SIGKILL)  # a killed worker stops counting at once
        holders[0].wait(timeout=30)
        assert count_processes(folder) == 2
        assert len(list(folder.glob("*.process"))) == 2  # its file was removed
        assert resolve_threads("auto", folder=folder) == 6
        monkeypatch.setattr(threads, "available_cores", lambda: 1)
        assert resolve_threads("auto", folder=folder) == 1  # never fewer than one
    finally:
        for proc in holders:
            proc.kill()
            proc.communicate(timeout=30)
    assert count_processes(folder) == 1
    # The file of a process that ended goes as soon as another process registers.
    ended = _holder(folder)
    ended.kill()
    ended.communicate(timeout=30)
    assert len(list(folder.glob(f"{ended.pid}-*.process"))) == 1
    fresh = _holder(folder)
    try:
        assert list(folder.glob(f"{ended.pid}-*.process")) == []
        assert len(list(folder.glob(f"{fresh.pid}-*.process"))) == 1
    finally:
        fresh.kill()
        fresh.communicate(timeout=30)


def test_explicit_counts_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads("auto", folder=tmp_path) == 3
    assert resolve_threads(2, folder=tmp_path) == 2
    assert apply_threads(2, folder=tmp_path) == 2
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    with pytest.raises(ConfigError, match=r"OMP_NUM_THREADS: expected a positive integer"):
        resolve_threads("auto", folder=tmp_path)
    with pytest.raises(ConfigError, match=r"train.threads: expected an integer >= 1 or 'auto'"):
        resolve_threads(0, folder=tmp_path)


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", "auto"), (3, 3), ("2", 2)]
)  # fmt: skip
def test_config_threads(value: object, expected: object) -> None:
    assert validate_config({}).train.threads == "auto"
    assert validate_config({"train": {"threads": value}}).train.threads == expected


@pytest.mark.parametrize("value", [0, -1, "many", 1.5, True])
def test_config_threads_refused(value: object) -> None:
    with pytest.raises(
        ConfigError, match=r"train.threads: must be an integer >= 1 or 'auto', got "
    ):
        validate_config({"train": {"threads": value}})


def test_thread_count_is_not_part_of_the_fingerprint() -> None:
    # A run may resume with another --threads, as it may on another device.
    one, auto = (validate_config({"train": {"threads": t}}) for t in (1, "auto"))
    assert config_fingerprint(one) == config_fingerprint(auto)


def test_train_run_applies_the_configured_threads(tmp_path: Path) -> None:
    for count in (2, 1):
        config = load_config(
            "demo",
            [f"run_dir={tmp_path / str(count)}", "train.epochs=1", "train.progress=false",
             f"train.threads={count}", "device=cpu"],
        )  # fmt: skip
        train_run(config)
        assert torch.get_num_threads() == count


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "demo", "--threads", "3"],
        ["search", "baseline", "demo", "--threads", "3"],
        ["search", "reweighter", "demo-reweight", "--threads", "3"],
        ["search", "loss", "digits-lt20-autobalance", "--threads", "3"],
        ["search", "architecture", "csnas-digits", "--threads", "3"],
    ],
)
def test_every_training_command_takes_threads(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)
    config = cli._load(args)
    assert config.train.threads == 3
    assert torch.get_num_threads() == 3  # applied before any work


def test_demo_takes_threads() -> None:
    args = cli.build_parser().parse_args(["demo", "--threads", "2"])
    assert args.threads == "2"


def test_bad_threads_on_the_command_line_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["train", "demo", "--threads", "0"]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.endswith("train.threads: must be an integer >= 1 or 'auto', got 0")
