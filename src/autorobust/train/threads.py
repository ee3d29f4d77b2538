"""How many CPU threads torch runs: a number, or ``auto``, which shares the cores among processes.

Torch's default, one thread per core, suits one process alone on a machine. Several processes that
each run one thread per core oversubscribe the CPU: their threads spin waiting for each other
instead of working. On the project's 2-core machine, with other jobs sharing it, one digits script
took 8 min 49 s with torch's default 2 threads and 32.5 s with 1 thread. Search workers started on
one machine (docs/methods/search.md, "Many workers on one machine") hit exactly this.

``auto`` therefore gives each autorobust process that trains on this machine an equal share:
``max(1, cores // processes)`` threads, where ``cores`` is the number of cores this process may
run on (its CPU affinity and cgroup quota) and ``processes`` counts the autorobust processes
training here now, this one included. Each training process registers by holding an ``flock`` on a
file of its own in a per-user folder (``$AUTOROBUST_RUNTIME_DIR``, default
``<tmp>/autorobust-<uid>/processes``); the kernel drops the lock when the process ends, however it
ends, so a killed worker stops counting at once. The share is computed again at the start of every
training run (every search trial), so workers adapt as others join or leave. ``OMP_NUM_THREADS``,
when set, is the user's explicit choice and ``auto`` takes it as is.

The thread count can change float results in the last bits (reductions are split differently):
runs that must be bit-identical should fix it (``--threads N`` or ``OMP_NUM_THREADS``).

Nothing here runs at import time; :func:`apply_threads` is the one place that sets torch's count.
"""

from __future__ import annotations

import math
import os
import secrets
import tempfile
from pathlib import Path
from types import ModuleType

from autorobust.errors import ConfigError

__all__ = [
    "AUTO",
    "apply_threads",
    "available_cores",
    "count_processes",
    "register_process",
    "resolve_threads",
    "runtime_dir",
]

AUTO = "auto"
_SUFFIX = ".process"

# This process's registration: (pid, folder, open file holding the lock). The pid detects a
# forked child, which inherits the parent's lock and must register on its own.
_registration: tuple[int, Path, int] | None = None


def runtime_dir() -> Path:
    """The folder of the per-process lock files: ``$AUTOROBUST_RUNTIME_DIR`` or a per-user one."""
    configured = os.environ.get("AUTOROBUST_RUNTIME_DIR")
    if configured:
        return Path(configured)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"autorobust-{uid}" / "processes"


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota if one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, quota) if quota is not None else cores)


def _cgroup_quota() -> int | None:
    """The cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``) CPU limit in cores, or None."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return math.ceil(int(quota) / int(period))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return math.ceil(quota_us / period_us) if quota_us > 0 and period_us > 0 else None


def _fcntl() -> ModuleType | None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no registry, auto means all cores
        return None
    return fcntl


def register_process(folder: Path | None = None) -> None:
    """Count this process as training on this machine until it ends (idempotent).

    The lock file is created under a temporary name, locked, and only then renamed into place,
    so that a process counting registrations never sees an unlocked file of a live process.
    """
    global _registration
    fcntl = _fcntl()
    folder = Path(folder) if folder is not None else runtime_dir()
    if fcntl is None:
        return
    if _registration is not None:
        pid, registered_in, handle = _registration
        if pid == os.getpid() and registered_in == folder:
            return
        if pid == os.getpid():  # registered elsewhere: move the registration
            os.close(handle)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{os.getpid()}-{secrets.token_hex(4)}"
    pending = folder / f".{name}.pending"
    handle = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(handle, fcntl.LOCK_EX)
    os.replace(pending, folder / f"{name}{_SUFFIX}")
    _registration = (os.getpid(), folder, handle)
    count_processes(folder)  # removes the files of processes that have ended since


def count_processes(folder: Path | None = None) -> int:
    """Autorobust processes registered in ``folder`` and still alive; removes dead ones' files."""
    fcntl = _fcntl()
    folder = Path(folder) if folder is not None else runtime_dir()
    if fcntl is None or not folder.is_dir():
        return 0
    alive = 0
    for path in folder.glob(f"*{_SUFFIX}"):
        try:
            handle = os.open(path, os.O_RDONLY)
        except OSError:  # removed meanwhile by another counting process
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            alive += 1  # its owner holds the lock (this process's own file counts here too)
        else:
            path.unlink(missing_ok=True)  # its owner is gone
        finally:
            os.close(handle)
    return alive


def resolve_threads(setting: int | str, *, folder: Path | None = None) -> int:
    """The thread count ``setting`` (an integer >= 1 or ``"auto"``) stands for, on this machine now.

    ``auto``: ``OMP_NUM_THREADS`` if set, else ``max(1, available_cores() // processes)`` with
    ``processes`` the live registrations in ``folder`` (default :func:`runtime_dir`), this process
    registered first.

    Raises:
        ConfigError: ``setting`` is neither a positive integer nor ``"auto"``, or
            ``OMP_NUM_THREADS`` is set to something else than a positive integer.
    """
    register_process(folder)
    if setting == AUTO:
        environ = os.environ.get("OMP_NUM_THREADS", "").strip()
        if environ:
            if not environ.isdigit() or int(environ) < 1:
                raise ConfigError(f"OMP_NUM_THREADS: expected a positive integer, got {environ!r}")
            return int(environ)
        return max(1, available_cores() // max(1, count_processes(folder)))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ConfigError(f"train.threads: expected an integer >= 1 or 'auto', got {setting!r}")
    return setting


def apply_threads(setting: int | str, *, folder: Path | None = None) -> int:
    """Set torch's intra-op thread count from ``setting`` (see :func:`resolve_threads`); return it.

    Called at the start of every training run and by the CLI before it trains; never at import.
    """
    import torch

    threads = resolve_threads(setting, folder=folder)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
