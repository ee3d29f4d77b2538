"""The database a study lives in: its URL, heartbeats, retries of dead trials, creation races.

Private to :mod:`autorobust.search` (the runner is its one user): an Optuna ``RDBStorage`` that
records a trial's first heartbeat as soon as it runs and gives a dead worker's trial its fail
reason and a retry, SQLite transactions that take the write lock when they begin, and the lock
under which workers started together create the schema and the study once.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.engine
import sqlalchemy.event
import sqlalchemy.exc
import sqlalchemy.pool
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from autorobust.errors import AutorobustError, ConfigError

_LOG = logging.getLogger("autorobust.search.runner")  # one logger for the runner's messages

FAIL_REASON_ATTR = "fail_reason"
"""User attribute holding the one-line reason a trial failed."""
RESUMED_FROM_ATTR = "resumed_from_trial"
"""User attribute of a retried trial: the number of the dead trial whose folder it took over."""


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _engine_kwargs(url: sqlalchemy.engine.URL) -> dict[str, Any]:
    backend = url.get_backend_name()
    if backend == "sqlite":
        # Several local workers may share one SQLite file: wait for its lock instead of failing.
        return {"connect_args": {"timeout": 30}}
    kwargs: dict[str, Any] = {"pool_pre_ping": True}  # long trials outlive idle connections
    if backend == "postgresql" and url.get_driver_name() in ("psycopg", "psycopg2"):
        # Fail within seconds, not minutes, when the host does not answer.
        kwargs["connect_args"] = {"connect_timeout": 10}
    return kwargs


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def storage_error(url: str, error: BaseException) -> AutorobustError:
    cause = getattr(error, "orig", None) or error
    detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    password = _password(url)
    if password:
        detail = detail.replace(password, "***")
    return AutorobustError(f"cannot open study storage {redact_url(url)}: {one_line(detail)}")


def _password(url: str) -> str | None:
    try:
        return sqlalchemy.engine.make_url(url).password
    except sqlalchemy.exc.ArgumentError:
        return None


def _dead_worker_reason(grace: int) -> str:
    return f"worker stopped sending heartbeats (killed?): none for more than {grace} s"


class HeartbeatFromStartStorage(optuna.storages.RDBStorage):
    """An ``RDBStorage`` that records a trial's first heartbeat as soon as it starts running.

    Optuna starts a trial's heartbeat thread only after ``study.ask()`` has sampled it, and never
    declares a trial without any heartbeat stale. A worker killed (or interrupted) inside ``ask``
    would leave a RUNNING trial forever, and the other workers, which count RUNNING trials as
    holding the budget, would wait forever. Recording the heartbeat on the state change closes
    that window: every dead trial goes stale after ``grace_period``.

    It also gives a stale trial its fail reason before Optuna fails it (the attributes of a
    finished trial can no longer be set), and reports how old each running trial's last heartbeat
    is (:meth:`heartbeat_ages`).
    """

    # Optuna's public ``create_new_trial`` and its study cache both go through this method.
    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        trial = super()._create_new_trial(study_id, template_trial)
        if trial.state == TrialState.RUNNING:
            self.record_heartbeat(trial._trial_id)
        return trial

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:  # a queued trial was taken
            self.record_heartbeat(trial_id)
        return changed

    @property
    def grace_seconds(self) -> int:
        """Seconds without a heartbeat after which a running trial is stale."""
        assert self.heartbeat_interval is not None
        return self.grace_period or 2 * self.heartbeat_interval

    # Called by ``optuna.storages.fail_stale_trials``, which then sets each returned trial FAIL.
    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        reason = _dead_worker_reason(self.grace_seconds)
        for trial_id in stale:
            # Another worker may have failed it meanwhile; its reason is then already set.
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason)
        return stale

    def heartbeat_ages(self, study_id: int) -> dict[int, float | None]:
        """Seconds since the last heartbeat of each RUNNING trial of the study, by trial number.

        Measured with the database's clock, as Optuna's staleness check is; None for a trial
        that has sent none yet.
        """
        # Optuna's tables, read the way its own `_get_stale_trial_ids` reads them.
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self.scoped_session) as session:
            now = session.execute(sqlalchemy.func.now()).scalar()
            rows = (
                session.query(models.TrialModel.number, models.TrialHeartbeatModel.heartbeat)
                .outerjoin(
                    models.TrialHeartbeatModel,
                    models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id,
                )
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.state == TrialState.RUNNING)
                .all()
            )
        assert now is not None
        now = now.replace(tzinfo=None)  # PostgreSQL returns an aware time, SQLite a naive one
        return {
            number: None
            if beat is None
            else max(0.0, (now - beat.replace(tzinfo=None)).total_seconds())
            for number, beat in rows
        }


class _RetryDeadTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a heartbeat-stale trial, logged, without the dead trial's fail reason.

    Optuna's callback copies the dead trial's user attributes to the copy it queues; the copy
    must not start out carrying the reason its predecessor failed.
    """

    def __init__(self, max_retry: int) -> None:
        super().__init__(max_retry=max_retry)
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = trial.user_attrs.get(FAIL_REASON_ATTR, "worker stopped sending heartbeats")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            attempt = len(self.retry_history(trial)) + 1
        trial = copy.copy(trial)
        inherited = (FAIL_REASON_ATTR, RESUMED_FROM_ATTR)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in inherited}
        super().__call__(study, trial)
        if attempt <= self.max_retry:
            _LOG.warning(
                "trial %d failed: %s; queued a copy with the same parameters (retry %d of %d)",
                trial.number, reason, attempt, self.max_retry,
            )  # fmt: skip
        else:
            _LOG.warning(
                "trial %d failed: %s; not retried (max_retry %d reached)",
                trial.number, reason, self.max_retry,
            )  # fmt: skip


def parse_url(url: str) -> sqlalchemy.engine.URL:
    try:
        return sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(
            "storage: expected an SQLAlchemy URL such as sqlite:///study.db or "
            f"postgresql+psycopg://user:password@host/db, got {redact_url(url)!r}"
        ) from None


def make_storage(
    url: str,
    parsed: sqlalchemy.engine.URL,
    *,
    heartbeat_interval: int,
    grace_period: int | None,
    max_retry: int,
) -> HeartbeatFromStartStorage:
    """The study's storage: heartbeats from a trial's start, dead trials retried (at most
    ``max_retry`` times) with their fail reason, SQLite transactions serialised."""
    with warnings.catch_warnings():
        # Heartbeats and retries are marked experimental by Optuna; we rely on them knowingly.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = HeartbeatFromStartStorage(
            url,
            engine_kwargs=_engine_kwargs(parsed),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=_RetryDeadTrial(max_retry),
        )
    if parsed.get_backend_name() == "sqlite":
        _serialise_sqlite_transactions(storage.engine)
    return storage


def driver_error(parsed: sqlalchemy.engine.URL, error: ImportError) -> AutorobustError:
    safe = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "postgresql":
        return AutorobustError(
            f"storage {safe}: the PostgreSQL driver is not installed; run "
            'pip install "autorobust[postgres]" and use a postgresql+psycopg:// URL'
        )
    return AutorobustError(
        f"storage {safe}: the Python driver for {parsed.drivername!r} is not installed"
        f" ({one_line(str(error.__cause__ or error))})"
    )


def _serialise_sqlite_transactions(engine: sqlalchemy.engine.Engine) -> None:
    """Make every transaction on ``engine`` take SQLite's write lock when it begins.

    Optuna's read-check-write steps (failing a stale trial, popping a queued trial) lock the row
    with ``SELECT ... FOR UPDATE``, which SQLite ignores: two local workers could both fail one
    stale trial (queueing two retries) or both pop one queued trial. ``BEGIN IMMEDIATE`` makes
    such transactions run one at a time across processes; the SQLite ``timeout`` makes the others
    wait for the lock. (SQLAlchemy's documented pysqlite recipe.)
    """

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # stop pysqlite from issuing its own BEGIN

    def on_begin(connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    sqlalchemy.event.listen(engine, "connect", on_connect)
    sqlalchemy.event.listen(engine, "begin", on_begin)
    engine.dispose()  # connections opened by Optuna's setup predate the listeners


# What two workers opening one fresh storage at the same moment can still get, for instance on a
# database without our open lock: both create the tables (PostgreSQL: a unique violation in
# pg_type; SQLite: "table ... already exists"), both stamp the schema version, or both insert the
# study. The loser opens again and finds what the winner created.
_CREATION_RACE = re.compile(
    r"already exists|duplicate key|unique constraint|UNIQUE constraint failed", re.IGNORECASE
)
OPEN_ATTEMPTS = 6
# Key of the PostgreSQL advisory lock held while a worker opens a study (any 64-bit integer that
# other applications sharing the database are unlikely to use).
_OPEN_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"autorobust.search.runner.open_study").digest()[:8], "big", signed=True
)
_OPEN_LOCK_TIMEOUT_S = 120


def is_creation_race(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is a concurrent creation's conflict."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(
            seen, (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)
        ) and _CREATION_RACE.search(str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def open_lock(parsed: sqlalchemy.engine.URL) -> Iterator[None]:
    """Hold, for the ``with`` block, the lock every worker takes to open a study on the storage.

    With it, one worker at a time creates the tables, stamps the schema version, creates the
    study and enqueues its first trial; the others then find them. PostgreSQL: a session
    advisory lock, released when its connection closes, however the process ends. SQLite: an
    ``flock`` on the database file's folder (SQLite's own locks are POSIX locks on the file,
    which an ``flock`` does not touch). Other databases: no lock; the open is retried instead.
    """
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        engine = sqlalchemy.create_engine(
            parsed, poolclass=sqlalchemy.pool.NullPool, **_engine_kwargs(parsed)
        )
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text(f"SET lock_timeout = '{_OPEN_LOCK_TIMEOUT_S}s'"))
                connection.execute(
                    sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _OPEN_LOCK_KEY}
                )
                connection.commit()
                yield
        finally:
            engine.dispose()
        return
    database = parsed.database or ""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None  # type: ignore[assignment]
    if (
        backend != "sqlite"
        or fcntl is None
        or database in ("", ":memory:")
        or "mode=memory" in str(parsed)
    ):
        yield
        return
    folder = Path(database).parent
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        yield  # SQLite reports the unusable path itself, naming it
        return
    try:
        deadline = time.monotonic() + _OPEN_LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AutorobustError(
                        f"{folder}: another process has been opening a study there for "
                        f"{_OPEN_LOCK_TIMEOUT_S} s; is it stuck?"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(descriptor)  # releases the flock
