from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autorobust.cli import main

FAST = [
    "--set",
    "train.epochs=2",
    "--set",
    "model.options.width=8",
    "--no-progress",
    "--device",
    "cpu",
]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("autorobust: error: ")
    return lines[0]


def test_train_writes_metrics_and_evaluate_reproduces_them(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "demo", "--run-dir", str(run_dir), *FAST]) == 0
    out = capsys.readouterr().out
    assert "balanced" in out and str(run_dir / "metrics.json") in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"run", "data", "validation", "test", "history", "calibration"}
    assert len(metrics["history"]) == 2
    assert metrics["test"]["num_samples"] == metrics["data"]["test_size"]
    assert len(metrics["test"]["confusion_matrix"]) == 10
    assert {
        "many_shot_accuracy",
        "medium_shot_accuracy",
        "few_shot_accuracy",
        "macro_f1",
        "worst_class_accuracy",
        "per_class_accuracy",
    } <= set(metrics["test"])

    assert main(["evaluate", str(run_dir), "--device", "cpu"]) == 0
    again = json.loads((run_dir / "metrics.json").read_text())
    assert again["test"]["balanced_accuracy"] == pytest.approx(metrics["test"]["balanced_accuracy"])
    assert again["test"]["confusion_matrix"] == metrics["test"]["confusion_matrix"]


def test_resume_of_a_finished_run_trains_no_more(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "demo", "--run-dir", str(run_dir), *FAST]) == 0
    first = json.loads((run_dir / "metrics.json").read_text())
    assert main(["train", "demo", "--run-dir", str(run_dir), "--resume", *FAST]) == 0
    second = json.loads((run_dir / "metrics.json").read_text())
    assert second["history"] == first["history"]
    assert second["test"]["balanced_accuracy"] == first["test"]["balanced_accuracy"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "missing.yaml"], r"missing\.yaml: no such config file"),
        (["train", "demo", "--set", "shift.rho=0.5"], r"shift\.rho: Input should be greater"),
        (["train", "demo", "--set", "trian.epochs=1"], r"trian: unknown key"),
        (["train", "demo", "--set", "model.name=vgg"], r"unknown model 'vgg'; valid: .*small_cnn"),
        (["train", "demo", "--set", "loss.name=nope"], r"unknown loss 'nope'; valid: .*focal"),
        (["train", "demo", "--set", "data.source=imagenet"], r"unknown data source 'imagenet'"),
        (["train", "demo", "--set", "shift.rho=1000"], r"class \d would have 0"),
        (
            [
                "train",
                "demo",
                "--set",
                "data.source=fashion-mnist",
                "--set",
                "data.options.root=/nonexistent",
            ],
            r"/nonexistent/train-images-idx3-ubyte",
        ),
        (["evaluate", "/nonexistent/run"], r"config\.yaml: missing"),
    ],
)
def test_user_errors_are_one_line_with_status_2(argv, message, capsys, tmp_path: Path):
    status = main([*argv, "--run-dir", str(tmp_path / "r")] if argv[0] == "train" else argv)
    assert status == 2
    assert re.search(message, _error_line(capsys))


def test_debug_shows_the_traceback():
    from autorobust.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "train", "missing.yaml"])


def test_datasets_lists_every_source(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "image-folder", "npz"):
        assert name in out
    digits = next(line for line in out.splitlines() if line.startswith("digits"))
    assert "ready" in digits


def test_console_script_exit_status_and_stderr(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "autorobust.cli", "train", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"autorobust: error: {bad}: train.epochs: "
        "Input should be greater than or equal to 1 (got -1)"
    ]
    assert "Traceback" not in proc.stderr


def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path: Path):
    run_dir = tmp_path / "run"

    def argv(epochs: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "autorobust.cli",
            "train",
            "demo",
            "--run-dir",
            str(run_dir),
            "--set",
            f"train.epochs={epochs}",
            "--set",
            "model.options.width=8",
            "--no-progress",
            "--device",
            "cpu",
        ]

    # A shell that starts pytest in the background makes SIGINT ignored, and children inherit
    # that: restore the default so the child's Python installs its KeyboardInterrupt handler.
    proc = subprocess.Popen(
        argv(200),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    checkpoint = run_dir / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # polling for the first checkpoint, not standing in for work
    assert checkpoint.exists(), "no checkpoint was written"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err

    from autorobust.train.trainer import load_checkpoint

    done = load_checkpoint(checkpoint)["epoch"]
    assert 1 <= done < 200
    # resume with a shorter budget is another configuration: refused, one line, status 2
    short = subprocess.run([*argv(3), "--resume"], capture_output=True, text=True, timeout=120)
    assert short.returncode == 2 and "different configuration" in short.stderr


def test_a_late_ctrl_c_exits_130_with_one_line_or_not_at_all(tmp_path: Path):
    """A Ctrl-C right after metrics.json is written (while the process ends) used to kill the
    process silently (status -2) or print "Exception ignored ... KeyboardInterrupt"."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autorobust.cli",
            "train",
            "demo",
            "--run-dir",
            str(run_dir),
            "--set",
            "train.epochs=1",
            *FAST[2:],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    metrics = run_dir / "metrics.json"
    deadline = time.monotonic() + 120
    while not metrics.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.002)  # polling for the file, not standing in for work
    assert metrics.exists(), "no metrics were written"
    time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 130), (proc.returncode, err)
    if proc.returncode == 0:  # it had ended: all its output is there
        assert err == "" and f"wrote {metrics}" in out
    else:
        assert err.strip() == (
            "autorobust: interrupted; checkpoints and studies are kept: rerun the same command "
            "(with --resume for train) to continue"
        )
