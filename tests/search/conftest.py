"""A throw-away PostgreSQL server for the search tests (session scope).

The server runs from a fresh temporary folder, listens on 127.0.0.1 only, on a free port, with
trust authentication, and is stopped with ``pg_ctl stop -m immediate`` and deleted afterwards.
``initdb`` refuses to run as root, so under root the server runs as the ``postgres`` user that the
Debian package creates (or ``nobody``). Tests are skipped, saying why, when the Python driver
(``psycopg``, the ``postgres`` extra) or the server binaries are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_PG_USER = "autorobust"
_PG_DB = "autorobust_test"


def _postgres_bin_dir() -> Path | None:
    """Folder holding initdb, pg_ctl and createdb: from PATH, else the Debian layout."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    # Debian/Ubuntu keep the server binaries off PATH, one folder per major version.
    versions = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]
    versions.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)
    candidates += versions[::-1]  # newest major version first
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "createdb")):
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(cmd: list[str], *, user: str | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Drop root's group and supplementary groups too, not only the user id.
    identity = {} if user is None else {"user": user, "group": pwd.getpwnam(user).pw_gid}
    return subprocess.run(
        cmd,
        **identity,
        extra_groups=None if user is None else [],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "LC_ALL": "C", "LANG": "C"},
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL ``postgresql+psycopg://autorobust@127.0.0.1:PORT/autorobust_test`` of a fresh server."""
    try:
        import psycopg  # noqa: F401 - only whether it imports
    except ImportError as error:
        pytest.skip(
            f"the PostgreSQL driver psycopg is not installed ({error}); install it with "
            "pip install -e '.[postgres]'"
        )
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under "
            "/usr/lib/postgresql/*/bin; install them with `apt-get install -y postgresql`"
        )
    user: str | None = None
    if os.geteuid() == 0:
        names = {entry.pw_name for entry in pwd.getpwall()}
        user = "postgres" if "postgres" in names else "nobody"
    root = Path(tempfile.mkdtemp(prefix="autorobust-pg-"))
    data, sockets, log = root / "data", root / "sock", root / "server.log"
    sockets.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    started = False
    try:
        init = _run(
            [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", _PG_USER,
             "--no-locale", "-E", "UTF8"],
            user=user, cwd=root,
        )  # fmt: skip
        if init.returncode != 0:
            pytest.fail(f"initdb failed: {init.stderr.strip()}")
        options = (
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 "
            # Durability is pointless for a throw-away server; skipping fsync keeps tests fast.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        start = _run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
             "-o", options, "start"],
            user=user, cwd=root,
        )  # fmt: skip
        started = start.returncode == 0
        if not started:
            server_log = log.read_text() if log.exists() else ""
            pytest.fail(f"pg_ctl start failed: {start.stderr.strip()} {server_log.strip()}")
        create = _run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", _PG_USER,
             _PG_DB],
            user=user, cwd=root,
        )  # fmt: skip
        if create.returncode != 0:
            pytest.fail(f"createdb failed: {create.stderr.strip()}")
        yield f"postgresql+psycopg://{_PG_USER}@127.0.0.1:{port}/{_PG_DB}"
    finally:
        if started:
            _run(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "stop", "-m", "immediate"],
                user=user, cwd=root,
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def new_postgres_database(postgres_url: str) -> Callable[[], str]:
    """``new_postgres_database()``: the URL of a new, empty database on the test server."""
    import sqlalchemy

    def create() -> str:
        name = f"fresh_{uuid.uuid4().hex[:12]}"
        engine = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return postgres_url.rsplit("/", 1)[0] + f"/{name}"

    return create
