from __future__ import annotations

from pathlib import Path

import pytest

from autorobust._io import atomic_write, exclusive_directory, write_json
from autorobust.cli import main
from autorobust.errors import AutorobustError


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})

    def broken(handle):
        handle.write(b'{"a": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


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
