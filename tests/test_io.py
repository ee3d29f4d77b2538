from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from autorobust._io import atomic_write, exclusive_directory, write_json, write_text
from autorobust.cli import main
from autorobust.errors import AutorobustError, WriteError


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})

    def broken(handle):
        handle.write(b'{"a": ')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(WriteError) as info:
        atomic_write(target, broken)
    assert str(info.value) == f"{target}: cannot write (No space left on device)"
    assert isinstance(info.value, OSError)  # callers that handle OSError still do
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


def test_a_runtime_error_while_writing_names_the_file(tmp_path: Path):
    def broken(handle):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    with pytest.raises(WriteError, match=r"x\.pt: cannot write \(\[enforce fail.*unexpected pos"):
        atomic_write(tmp_path / "x.pt", broken)
    assert list(tmp_path.iterdir()) == []


def test_other_errors_of_the_writer_pass_unchanged(tmp_path: Path):
    def broken(handle):
        raise KeyError("a bug, not the disk")

    with pytest.raises(KeyError):
        atomic_write(tmp_path / "x.json", broken)
    assert list(tmp_path.iterdir()) == []


def test_permission_denied_names_the_file(tmp_path: Path, monkeypatch):
    # Root ignores file modes, so the OS's refusal to create a file is faked at os.open.
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):
        if Path(os.fsdecode(path)).parent == tmp_path / "locked":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    (tmp_path / "locked").mkdir()
    monkeypatch.setattr(os, "open", refuse)
    target = tmp_path / "locked" / "metrics.json"
    with pytest.raises(WriteError) as info:
        write_json(target, {"a": 1})
    assert str(info.value) == f"{target}: cannot write (Permission denied)"
    assert list((tmp_path / "locked").iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs (needs the right to mount, e.g. root; skipped otherwise)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_checkpoint_on_a_full_disk(tiny_disk: Path):
    path = tiny_disk / "checkpoint.pt"
    atomic_write(path, lambda handle: torch.save({"w": torch.zeros(1000)}, handle))
    before = path.read_bytes()
    # Larger than what is left: torch reports it as RuntimeError "... unexpected pos ...".
    with pytest.raises(WriteError) as info:
        atomic_write(path, lambda handle: torch.save({"w": torch.zeros(20000)}, handle))
    assert str(info.value) == f"{path}: cannot write (No space left on device)"
    assert path.read_bytes() == before
    assert [p.name for p in tiny_disk.iterdir()] == ["checkpoint.pt"]  # no temporary left


def test_a_text_file_on_a_full_disk(tiny_disk: Path):
    with pytest.raises(WriteError, match=r"big\.json: cannot write \(No space left on device\)$"):
        write_text(tiny_disk / "big.json", "x" * 200_000)
    assert list(tiny_disk.iterdir()) == []


def test_a_read_only_file_system(tiny_disk: Path):
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    with pytest.raises(WriteError, match=r"m\.json: cannot write \(Read-only file system\)$"):
        write_text(tiny_disk / "m.json", "{}")
    with (
        pytest.raises(WriteError, match=r"run: cannot create the run directory \(Read-only"),
        exclusive_directory(tiny_disk / "run"),
    ):
        pass


def test_written_files_get_the_usual_permissions(tmp_path: Path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        path = write_json(tmp_path / "m.json", {})
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_json_refuses_nan(tmp_path: Path):
    with pytest.raises(ValueError, match="Out of range float"):
        write_json(tmp_path / "x.json", {"a": float("nan")})
    assert not (tmp_path / "x.json").exists()


def test_a_run_directory_in_use_is_refused(tmp_path: Path, capsys):
    with (
        exclusive_directory(tmp_path / "run"),
        pytest.raises(AutorobustError, match="in use"),
        exclusive_directory(tmp_path / "run"),
    ):
        pass
    with exclusive_directory(tmp_path / "run"):
        status = main(["train", "demo", "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert status == 2
    assert "run: in use by another autorobust process" in capsys.readouterr().err
    with exclusive_directory(tmp_path / "run"):  # released: can be taken again
        pass
