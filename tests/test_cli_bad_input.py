"""Bad input through the command line (issue 14): every refusal is one line with status 2, is made
before anything is written, and leaves no run directory behind; a finished run is never replaced
silently; a full disk names the file; no message suggests loading a file unsafely."""

from __future__ import annotations

import errno
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autorobust.cli import main
from autorobust.train.trainer import load_checkpoint

FAST = [
    "--set",
    "train.epochs=2",
    "--set",
    "model.options.width=8",
    "--no-progress",
    "--device",
    "cpu",
]
UNSAFE_ADVICE = re.compile(r"weights_only|allow_pickle|pickle\.load|trust", re.IGNORECASE)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("autorobust: error: ")
    return lines[0].removeprefix("autorobust: error: ")


def _refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    return _error_line(capsys)


def _noise_matrix(rows: int, row_3_diagonal: float = 1.0) -> str:
    matrix = np.eye(rows)
    if rows > 3:
        matrix[3, 3] = row_3_diagonal
    return json.dumps(matrix.tolist())


# ------------------------------------------------------------------ names, options, matrices


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.name=vgg", r"^model\.name: unknown model 'vgg'; valid: .*small_cnn"),
        ("loss.name=nope", r"^loss\.name: unknown loss 'nope'; valid: .*focal"),
        ("data.source=imagenet", r"^data\.source: unknown data source 'imagenet'; valid: .*npz"),
        (
            "model.options.depth=3",
            r"^model\.options: model 'small_cnn' has no option 'depth'; accepted: width, dropout",
        ),
        (
            "loss.options.gama=2",
            r"^loss\.options: loss 'cross_entropy' has no option 'gama'; accepted: label_smooth",
        ),
        (
            "data.options.size=3",
            r"^data\.options: data source 'digits': unknown option 'size'; accepted: test_frac",
        ),
        ("method=boosting", r"^--set method=boosting: method: Input should be 'erm'"),
        ("model.options.width=-1", r"model 'small_cnn': width must be an integer >= 1"),
        ("shift.rho=1000", r"class \d would have 0 training examples"),
        (
            f"shift.noise_matrix={_noise_matrix(10, 0.9)}",
            r"^--set shift\.noise_matrix=.*: shift\.noise_matrix: row 3 sums to 0\.9, expected 1$",
        ),
        (
            f"shift.noise_matrix={_noise_matrix(3)}",
            r"^shift\.noise_matrix: is 3 x 3, but data source 'digits' has 10 classes$",
        ),
    ],
)
def test_a_refused_config_writes_nothing(override: str, message: str, tmp_path: Path, capsys):
    run_dir = tmp_path / "runs" / "bad"
    argv = ["train", "demo", "--run-dir", str(run_dir), *FAST, "--set", override]
    if override.startswith("shift.noise_matrix"):
        argv += ["--set", "shift.noise=matrix"]
    assert re.search(message, _refused(argv, capsys))
    assert list(tmp_path.iterdir()) == []  # not even the parent folder of the run directory


def test_a_search_with_an_unknown_name_creates_no_study(tmp_path: Path, capsys):
    run_dir = tmp_path / "search"
    line = _refused(
        ["search", "baseline", "demo", "--run-dir", str(run_dir), "--set", "model.name=vgg"],
        capsys,
    )
    assert line.startswith("model.name: unknown model 'vgg'")
    assert not run_dir.exists()


def test_a_run_that_fails_before_its_first_checkpoint_removes_its_directory(tmp_path: Path, capsys):
    run_dir = tmp_path / "a" / "b" / "run"
    line = _refused(
        ["train", "demo", "--run-dir", str(run_dir), "--set", "train.lr=1e12", *FAST], capsys
    )
    assert line.startswith("training diverged at epoch 0")
    assert list(tmp_path.iterdir()) == []  # run, b and a were created by the call: all removed


def test_a_directory_that_existed_before_is_kept(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    _refused(["train", "demo", "--run-dir", str(run_dir), "--set", "train.lr=1e12", *FAST], capsys)
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_a_genotype_whose_cell_is_a_string(tmp_path: Path, capsys):
    genotype = tmp_path / "cell.json"
    genotype.write_text(json.dumps({"normal": "sep_conv_3x3", "reduce": ["skip_connect"] * 14}))
    run_dir = tmp_path / "run"
    argv = ["train", "demo", "--run-dir", str(run_dir), "--no-progress", "--device", "cpu"]
    argv += ["--set", "model.name=darts", "--set", f"model.options.genotype={genotype}"]
    line = _refused(argv, capsys)
    assert line == f"{genotype}: normal must be a list of operation names, got 'sep_conv_3x3'"
    assert not run_dir.exists()


# ---------------------------------------------------------------------------- --set blame


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "train.lr=abc",
            "--set train.lr=abc: train.lr: Input should be a valid number, unable to parse "
            "string as a number (got 'abc')",
        ),
        ("train.lr=inf", "--set train.lr=inf: train.lr: Input should be a finite number"),
        ("train.lr=nan", "--set train.lr=nan: train.lr: Input should be a finite number"),
        ("shift.rho=.inf", "--set shift.rho=.inf: shift.rho: Input should be a finite number"),
        ("trian.epochs=1", "--set trian.epochs=1: trian: unknown key"),
        (
            "loss.options.gamma=.inf",
            "--set loss.options.gamma=.inf: loss.options: gamma must be a finite number, got inf",
        ),
    ],
)
def test_an_invalid_override_is_named(override: str, message: str, tmp_path: Path, capsys):
    line = _refused(
        ["train", "demo", "--run-dir", str(tmp_path / "run"), "--set", override], capsys
    )
    assert line.startswith(message)
    assert "demo.yaml" not in line
    assert not (tmp_path / "run").exists()


def test_an_error_of_the_file_is_still_blamed_on_the_file(tmp_path: Path, capsys):
    config = tmp_path / "x.yaml"
    config.write_text("train:\n  lr: -1\n")
    line = _refused(["train", str(config), "--set", "train.epochs=2"], capsys)
    assert line == f"{config}: train.lr: Input should be greater than 0 (got -1)"


# --------------------------------------------------------------------- an existing run


def test_a_finished_run_is_not_replaced_without_resume_or_overwrite(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "demo", "--run-dir", str(run_dir), *FAST]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    for other in ([], ["--set", "seed=1"]):  # the same config, and another one
        line = _refused(["train", "demo", "--run-dir", str(run_dir), *FAST, *other], capsys)
        assert line == (
            f"{run_dir}: holds a finished run (metrics.json); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --run-dir"
        )
        assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before

    assert (
        main(["train", "demo", "--run-dir", str(run_dir), *FAST, "--set", "seed=1", "--overwrite"])
        == 0
    )
    assert "seed: 1" in (run_dir / "config.yaml").read_text()
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 2
    assert (run_dir / "metrics.json").read_bytes() != before["metrics.json"]


def test_an_unfinished_run_is_not_restarted_without_resume(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "demo", "--run-dir", str(run_dir), *FAST]) == 0
    capsys.readouterr()
    (run_dir / "metrics.json").unlink()  # as if it had been stopped after its last checkpoint
    line = _refused(["train", "demo", "--run-dir", str(run_dir), *FAST], capsys)
    assert line.startswith(f"{run_dir}: holds an unfinished run (checkpoint.pt); pass --resume")
    assert main(["train", "demo", "--run-dir", str(run_dir), *FAST, "--resume"]) == 0


def test_a_refused_resume_changes_nothing_and_its_advice_works(tmp_path: Path, capsys):
    """Issue 21: a changed config or relabel file on a finished run is refused before config.yaml
    and data.json are rewritten, so `evaluate` still works; the advice (--overwrite) is taken."""
    from autorobust.data.relabel import write_relabel_file
    from autorobust.experiment import build_splits, load_run_config

    run_dir = tmp_path / "run"
    base = ["train", "demo", "--run-dir", str(run_dir), *FAST]
    assert main(base) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    pool = build_splits(load_run_config(run_dir)).train
    relabel = write_relabel_file(
        tmp_path / "r.npz", labels=pool.labels, source_index=pool.source_index
    )
    changes = (["--set", "train.epochs=3"], ["--set", f"data.relabel_file={relabel}"])
    for changed in changes:
        line = _refused([*base, *changed, "--resume"], capsys)
        assert line == (
            f"{run_dir / 'checkpoint.pt'}: checkpoint was written by a different configuration "
            "(config or relabel file changed); pass --overwrite to replace that run, or choose "
            "another --run-dir"
        )
        assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    assert main(["evaluate", str(run_dir), "--device", "cpu"]) == 0
    assert main([*base, "--set", "train.epochs=3", "--overwrite"]) == 0
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 3


def test_a_resume_removes_the_temporary_files_of_a_killed_write(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "demo", "--run-dir", str(run_dir), *FAST]) == 0
    (run_dir / "metrics.json").unlink()  # killed after its last checkpoint ...
    stale = run_dir / ".checkpoint.pt.k1ll3d.tmp"  # ... while writing the next one
    stale.write_bytes((run_dir / "checkpoint.pt").read_bytes()[:1000])
    assert main(["train", "demo", "--run-dir", str(run_dir), *FAST, "--resume"]) == 0
    assert sorted(p.name for p in run_dir.glob(".*")) == [".lock"]


def test_resume_and_overwrite_exclude_each_other(tmp_path: Path, capsys):
    line = _refused(
        ["train", "demo", "--run-dir", str(tmp_path / "r"), "--resume", "--overwrite"], capsys
    )
    assert line == "--overwrite: not allowed with --resume (see: autorobust train --help)"
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # argparse's own refusals: one line naming the flag, no usage block
        (
            ["design", "demo", "--budget", "abc"],
            "--budget: expected a number, got 'abc' (see: autorobust design --help)",
        ),
        (
            ["search", "baseline", "demo", "--n-trials", "x"],
            "--n-trials: invalid int value: 'x' (see: autorobust search baseline --help)",
        ),
        (["train"], "the following arguments are required: config (see: autorobust train --help)"),
        # a value the config refuses is blamed on the flag as typed, not on a --set never typed
        (
            ["train", "demo", "--threads", "abc"],
            "--threads abc: train.threads: must be an integer >= 1 or 'auto', got 'abc'",
        ),
        (
            ["design", "demo", "--budget", "1"],
            "--budget 1: design.budget: Input should be greater than or equal to 1.5 (got 1)",
        ),
        (
            ["search", "baseline", "demo", "--n-trials", "0"],
            "--n-trials 0: search.n_trials: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            ["search", "baseline", "demo", "--study-name", ""],
            "--study-name '': search.study_name: must not be empty (an empty name would silently "
            "join the default study); leave it out for the default",
        ),
        (
            ["design", "demo", "--study-name", " "],
            "--study-name ' ': search.study_name: must not be empty (an empty name would silently "
            "join the default study); leave it out for the default",
        ),
    ],
)
def test_a_bad_flag_is_one_line_that_names_it(argv, expected, tmp_path: Path, capsys):
    assert _refused([*argv, "--run-dir", str(tmp_path / "r")], capsys) == expected
    assert not (tmp_path / "r").exists()


def test_a_rho_without_imbalance_names_the_fields(tmp_path: Path, capsys):
    line = _refused(
        [
            "train",
            "demo",
            "--run-dir",
            str(tmp_path / "r"),
            "--set",
            "shift.imbalance=none",
            "--set",
            "shift.rho=10",
        ],
        capsys,
    )
    assert line.endswith(
        "--set shift.imbalance=none, --set shift.rho=10: shift: rho=10 has no effect with "
        "imbalance 'none'; set shift.rho to 1 or shift.imbalance to long_tail or step"
    )
    line = _refused(
        [
            "train",
            "demo",
            "--run-dir",
            str(tmp_path / "r"),
            "--set",
            "shift.noise=none",
            "--set",
            "shift.noise_rate=0.2",
        ],
        capsys,
    )
    assert line.endswith(
        "shift: noise_rate=0.2 has no effect with noise 'none'; set shift.noise_rate to 0 or "
        "shift.noise to symmetric or pair"
    )


# ------------------------------------------------------------------------- image paths


def test_a_csv_row_outside_the_image_folder_is_refused(tmp_path: Path, capsys):
    images = tmp_path / "a" / "b" / "c" / "images"
    images.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (4, 4), (40 * i, 0, 0)).save(images / f"img{i}.png")
    Image.new("RGB", (4, 4), (0, 0, 0)).save(
        tmp_path / "a" / "outside.png"
    )  # exists: it would load
    csv = images / "labels.csv"
    rows = ["image,label", "img0.png,0", "img1.png,1", "../../../outside.png,0", "img2.png,1"]
    csv.write_text("\n".join(rows) + "\n")
    base = ["train", "demo", "--run-dir", str(tmp_path / "run"), *FAST]
    base += ["--set", "data.source=image-folder", "--set", f"data.options.train_csv={csv}"]
    line = _refused(base, capsys)
    assert line == (
        f"{csv} line 4: image path '../../../outside.png' leads outside the image folder {images}"
    )
    rows[3] = f"{tmp_path / 'a' / 'outside.png'},0"
    csv.write_text("\n".join(rows) + "\n")
    line = _refused(base, capsys)
    assert line.startswith(
        f"{csv} line 4: image path '{tmp_path / 'a' / 'outside.png'}' is absolute"
    )
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------- unsafe loading


def test_a_garbage_checkpoint_gets_no_unsafe_advice(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "demo", "--run-dir", str(run_dir), *FAST]) == 0
    capsys.readouterr()
    checkpoint = run_dir / "checkpoint.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    garbage = [b"\x80\x04garbage" * 50]  # a pickle-like header: torch advised weights_only=False
    for content in garbage:
        checkpoint.write_bytes(content)
        for argv in (
            ["evaluate", str(run_dir)],
            ["train", "demo", "--run-dir", str(run_dir), *FAST, "--resume"],
        ):
            line = _refused(argv, capsys)
            assert line.startswith(f"{checkpoint}: not an autorobust checkpoint")
            assert not UNSAFE_ADVICE.search(line), line
    torch.save({"version": 1, "x": Payload()}, checkpoint)
    line = _refused(["evaluate", str(run_dir)], capsys)
    assert line == (
        f"{checkpoint}: not an autorobust checkpoint: it holds Python objects (print) other than "
        "tensors, numbers and plain containers, which are never unpickled"
    )


def test_a_file_that_is_not_an_npz_gets_no_unsafe_advice(tmp_path: Path, capsys):
    path = tmp_path / "data.npz"
    base = ["train", "demo", "--run-dir", str(tmp_path / "run"), *FAST]
    for content in (b"just some text\n" * 10, b"\x80\x04\x95pickled" * 10):
        path.write_bytes(content)
        line = _refused(
            [*base, "--set", "data.source=npz", "--set", f"data.options.path={path}"],
            capsys,
        )
        assert line == f"{path}: not an .npz archive (a zip file of .npy arrays)"
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- full disk


class _FullDisk(io.RawIOBase):
    """A file descriptor on a disk with ``free`` bytes left: past them the write fails with
    ENOSPC, as the operating system's ``write`` does. Only the OS is faked; torch and Python's
    buffered file are the real ones."""

    def __init__(self, fd: int, free: int) -> None:
        self._fd, self._free = fd, free

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        if len(data) > self._free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._free -= len(data)
        return os.write(self._fd, data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def _fill_disk(monkeypatch, free: callable) -> None:
    """Every file the package writes atomically gets ``free()`` bytes of disk."""
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        if "w" not in mode:
            return real_fdopen(fd, mode, *args, **kwargs)
        return io.BufferedWriter(_FullDisk(fd, free()))

    monkeypatch.setattr("autorobust._io.os.fdopen", fdopen)


def test_a_full_disk_at_a_checkpoint_names_the_file_and_keeps_the_last_one(
    tmp_path: Path, capsys, monkeypatch
):
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoint.pt"
    # The disk fills up once the first checkpoint is on it.
    _fill_disk(monkeypatch, lambda: 1024 if checkpoint.exists() else 1 << 30)
    line = _refused(["train", "demo", "--run-dir", str(run_dir), *FAST], capsys)
    assert line == f"{checkpoint}: cannot write (No space left on device)"
    assert load_checkpoint(checkpoint)["epoch"] == 1  # the previous checkpoint, intact
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".lock",
        "checkpoint.pt",
        "config.yaml",
        "data.json",
    ]  # no temporary file left


def test_a_full_disk_before_the_first_checkpoint_leaves_no_run_directory(
    tmp_path: Path, capsys, monkeypatch
):
    run_dir = tmp_path / "run"
    _fill_disk(monkeypatch, lambda: 8192)  # enough for config.yaml and data.json only
    line = _refused(["train", "demo", "--run-dir", str(run_dir), *FAST], capsys)
    assert line == f"{run_dir / 'checkpoint.pt'}: cannot write (No space left on device)"
    assert not run_dir.exists()


# ------------------------------------------------------------------------- design genotypes


def test_a_bad_genotype_file_is_refused_before_the_design_starts(tmp_path: Path, capsys):
    from autorobust.methods.csnas.darts.genotype import DARTS_V2

    data = DARTS_V2.to_dict()
    data["normal"][3] = "conv_9x9"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    run_dir = tmp_path / "design"
    base = ["design", "demo", "--run-dir", str(run_dir), *FAST]
    expected = (
        f"design.architectures: {bad}: normal[3] (edge 1->3) is the unknown operation 'conv_9x9'"
    )
    for entries in (f"[fixed, {bad}]", f"[{bad}]"):
        line = _refused([*base, "--set", f"design.architectures={entries}"], capsys)
        assert line.startswith(expected + "; valid: ")
        assert not run_dir.exists()  # no probe/, noise_model.json or study.db
    missing = tmp_path / "missing.json"
    line = _refused([*base, "--set", f"design.architectures=[fixed, {missing}]"], capsys)
    assert line == f"design.architectures: {missing}: no such genotype file"
    assert not run_dir.exists()
