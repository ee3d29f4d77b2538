"""Atomic file writes, and the one restricted reader of ``.npz`` archives.

Writes go to a temporary file in the same folder, then are renamed over the target.

A reader (or a crash) never sees a half-written file: ``os.replace`` is atomic on POSIX and Windows
when source and target are on the same file system, which a sibling temporary file guarantees.
A write that fails (full disk, no permission) raises :class:`~autorobust.errors.WriteError`, one
line naming the file and the cause, and leaves the previous file and no temporary behind.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from autorobust.errors import AutorobustError, DataError, WriteError

__all__ = [
    "atomic_write",
    "describe_os_error",
    "exclusive_directory",
    "missing_directories",
    "read_npz",
    "write_json",
    "write_text",
]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, rename it to ``path``.

    Whatever ``write`` returns (e.g. the byte count of ``handle.write``) is ignored. Returns the
    final path. On any exception the temporary file is removed and ``path`` is left untouched.

    Raises:
        WriteError: an ``OSError`` or ``RuntimeError`` raised while creating, writing or renaming
            the file (torch reports a full disk as ``RuntimeError: ... unexpected pos``), as one
            line naming ``path`` and the cause, e.g. ``run/checkpoint.pt: cannot write (No space
            left on device)``. Other exceptions propagate unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteError(f"{path}: cannot write ({describe_os_error(exc, path)})") from exc
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 & ~umask).
        os.chmod(tmp_name, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, AutorobustError):
            cause = describe_os_error(exc, path, Path(tmp_name))
            raise WriteError(f"{path}: cannot write ({cause})") from exc
        raise
    return path


def describe_os_error(exc: BaseException, *paths: Path) -> str:
    """The cause of a failed file operation in a few words, on one line.

    The first ``OSError`` with a system message in the chain of ``exc`` (its ``__cause__`` and
    ``__context__``) wins, e.g. "No space left on device": torch reports a failed write as a
    ``RuntimeError`` whose context is the ``OSError``. The file the OS names is added when it is
    none of ``paths`` nor a temporary file beside one of them (say, the parent folder that could
    not be created). Without such an error, the first line of ``exc``'s own message.
    """
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.strerror:
            named = None if error.filename is None else Path(os.fsdecode(error.filename))
            if named is not None and not any(_same_file(named, path) for path in paths):
                return f"{error.strerror}: {named}"
            return error.strerror
        error = error.__cause__ or error.__context__
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def _same_file(named: Path, path: Path) -> bool:
    """Whether ``named`` is ``path`` or one of the temporary files :func:`atomic_write` makes
    beside it."""
    if named == path:
        return True
    temporary = named.name.startswith(f".{path.name}.") and named.name.endswith(".tmp")
    return temporary and named.parent == path.parent


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
        WriteError: the folder or its lock file cannot be created (e.g. no permission).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle = open(path / ".lock", "a+")  # noqa: SIM115 - closed by the with block below
    except OSError as exc:
        cause = describe_os_error(exc, path, path / ".lock")
        raise WriteError(f"{path}: cannot create the run directory ({cause})") from exc
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        with handle:
            yield path
        return
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AutorobustError(f"{path}: in use by another autorobust process") from None
        try:
            yield path
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def missing_directories(path: str | os.PathLike[str]) -> list[Path]:
    """The folders among ``path`` and its parents that do not exist yet, outermost first: those
    that ``Path(path).mkdir(parents=True)`` would create (and a caller may remove again)."""
    path = Path(path).absolute()
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing[::-1]


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip


def read_npz(
    path: str | os.PathLike[str],
    data: bytes | None = None,
    *,
    select: Callable[[list[str]], Iterable[str]] | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive, read without unpickling anything.

    Every ``.npz`` file autorobust reads (a data source, a relabel file, sample weights,
    training dynamics) goes through here; what the arrays must hold (names, shapes, labels) is
    checked by the caller.

    Args:
        path: the file, read when ``data`` is None and named in every message.
        data: the file's bytes when the caller has read them already (to hash them, say).
        select: given the archive's member names, the names to read (in that order); it may
            raise :class:`DataError` for a missing one. Default: every member. A member not
            selected is never decoded, so it cannot be refused.

    Raises:
        DataError: one line naming ``path``: a single ``.npy`` array, another kind of file, a
            corrupt or truncated archive, a member that is not an ``.npy`` array or holds
            objects (pickles are refused; the member is named), or a file that cannot be read.
    """
    path = Path(path)
    try:
        if data is None:
            with path.open("rb") as stream:
                magic = stream.read(len(_NPY_MAGIC))
        else:
            magic = data[: len(_NPY_MAGIC)]
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    # numpy takes any file that is neither a zip nor an .npy for a pickle and refuses it with
    # advice to load it unsafely: tell what the file is from its first bytes instead.
    if magic.startswith(_NPY_MAGIC):
        raise DataError(f"{path}: expected an .npz archive, got a single .npy array")
    if not magic.startswith(_ZIP_MAGICS):
        raise DataError(f"{path}: not an .npz archive (a zip file of .npy arrays)")
    key = None
    arrays: dict[str, np.ndarray] = {}
    try:
        source: Any = path if data is None else io.BytesIO(data)
        with np.load(source, allow_pickle=False) as archive:
            names = list(archive.files)
            for key in names if select is None else select(names):
                value = archive[key]
                if not isinstance(value, np.ndarray):  # numpy hands a non-.npy member as bytes
                    raise DataError(f"{path}: {key}: not an .npy array inside the archive")
                arrays[key] = value
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError):
        raise DataError(f"{path}: corrupt or truncated .npz archive") from None
    except ValueError:
        # numpy refuses an object array (pickled Python objects) or a malformed header with a
        # ValueError whose text advises loading it unsafely: it is not passed on.
        where = "" if key is None else f"{key}: "
        raise DataError(
            f"{path}: {where}not a plain numeric array (object arrays and malformed .npy "
            "entries are refused)"
        ) from None
    except OSError as exc:
        if data is not None:
            raise DataError(f"{path}: corrupt or truncated .npz archive") from None
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return arrays
