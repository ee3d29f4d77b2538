"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A reader (or a crash) never sees a half-written file: ``os.replace`` is atomic on POSIX and Windows
when source and target are on the same file system, which a sibling temporary file guarantees.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "exclusive_directory", "write_json", "write_text"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, rename it to ``path``.

    Returns the final path. On any exception the temporary file is removed and ``path`` is left
    untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 & ~umask).
        os.chmod(tmp_name, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; restore at once
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN/inf are refused: they are not JSON)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


@contextmanager
def exclusive_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold an exclusive lock on folder ``path`` (created if needed) for the ``with`` block.

    Two trainings writing one run directory would overwrite each other's checkpoints; the second
    one fails at once instead. The lock is an ``flock`` on ``path/.lock``, released by the kernel
    when the process ends, however it ends. Where ``fcntl`` does not exist (Windows), no lock.

    Raises:
        AutorobustError: another process holds the lock.
    """
    from autorobust.errors import AutorobustError

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield path
        return
    with open(path / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AutorobustError(f"{path}: in use by another autorobust process") from None
        try:
            yield path
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
