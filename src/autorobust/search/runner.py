"""Run an Optuna study: create or resume it, run trials until enough have finished, summarise it.

This module and :mod:`autorobust.search.samplers` are the only places that talk to Optuna. A study
lives in a database named by an SQLAlchemy URL: by default ``sqlite:///<run_dir>/study.db``; any
number of worker processes, on any number of machines, can share one PostgreSQL study by running
:func:`run_study` with the same study name and URL.

Guarantees of :func:`run_study`, across workers and restarts:

- Workers may start at the same instant on a fresh storage: the schema and the study are created
  once (under a PostgreSQL advisory lock, or an ``flock`` on the SQLite file's folder), and an
  open that still loses a creation race (a unique violation, "table ... already exists") is
  retried.
- It stops once the study holds ``n_trials`` *finished* trials, where finished means COMPLETE or
  PRUNED (a pruned trial was evaluated and judged; it consumed its budget). FAIL trials do not
  count, and never more than ``n_trials`` trials finish, however many workers race (see
  :class:`_GuardedObjective`).
- A trial that raises an ``Exception`` or returns NaN ends as FAIL, with a one-line reason in the
  user attribute ``"fail_reason"`` and a one-line warning in the log; the study goes on.
- A worker killed outright (SIGKILL, power loss) stops sending heartbeats; after ``grace_period``
  seconds another worker marks its trial FAIL, with the reason ``worker stopped sending
  heartbeats (killed?) ...``, and queues a copy with the same parameters (up to ``max_retry``
  times), so the budget is still met. :func:`take_over_trial_dir` gives the copy the dead trial's
  folder, so that it can resume from the dead trial's checkpoint.
- While the rest of the budget is held by running trials of other (possibly dead) workers, a
  worker logs which trials it waits for, how long ago each sent its last heartbeat and how many
  seconds of the grace period remain, instead of waiting silently.
- Ctrl-C (``KeyboardInterrupt``) marks the running trial FAIL and propagates; running the same
  command again resumes the study by name.

Logging: while it runs, :func:`run_study` lowers Optuna's own verbosity to WARNING (restoring it
afterwards) and drops Optuna's multi-line failed-trial warnings, which duplicate this module's
one-line ones; the tracebacks of failed trials are logged at DEBUG on this module's logger.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import sqlalchemy
import sqlalchemy.engine
import sqlalchemy.event
import sqlalchemy.exc
import sqlalchemy.pool
from optuna.trial import FrozenTrial, TrialState

from autorobust.config import SearchConfig, check_search_setting
from autorobust.errors import AutorobustError, ConfigError, UnknownNameError
from autorobust.search._storage import (
    FAIL_REASON_ATTR,
    OPEN_ATTEMPTS,
    RESUMED_FROM_ATTR,
    HeartbeatFromStartStorage,
    driver_error,
    is_creation_race,
    make_storage,
    one_line,
    open_lock,
    parse_url,
    redact_url,
    storage_error,
)
from autorobust.search._trial_dirs import (
    remove_partial_writes,
    retried_trial_numbers,
    take_over_trial_dir,
)
from autorobust.search.samplers import (
    TrialSeededSampler,
    create_pruner,
    create_sampler,
    pruner_names,
    sampler_names,
)

__all__ = [
    "FAIL_REASON_ATTR",
    "RESUMED_FROM_ATTR",
    "Direction",
    "SearchSettings",
    "best_trial_summary",
    "create_sampler",
    "open_study",
    "redact_url",
    "remove_partial_writes",
    "retried_trial_numbers",
    "retry_dead_trials",
    "run_study",
    "study_state_counts",
    "take_over_trial_dir",
]

_LOG = logging.getLogger(__name__)

SPACE_ATTR = "search_space"  # study user attribute: the space the study was created over

Direction = Literal["maximize", "minimize"]
"""The direction of one objective value, as Optuna names it."""

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# States of the trials that hold part of the budget: finished, running, or queued for a retry.
_HOLDING_BUDGET = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
_SURPLUS_REASON = "not run: other workers already hold the remaining n_trials budget"
# Seconds between checks while other workers hold the rest of the budget. Short enough that a
# worker exits soon after the study is done, long enough not to load a shared database.
_MAX_POLL_S = 5.0


# The fields SearchSettings shares with a config's search section (SearchConfig), and those of
# them with bounds, which are SearchConfig's.
_CONFIG_FIELDS = (
    "storage",
    "sampler",
    "n_trials",
    "timeout",
    "seed",
    "n_startup_trials",
    "n_ei_candidates",
    "gamma",
    "multivariate",
    "pruner",
    "pruner_startup_trials",
    "heartbeat_interval",
    "max_retry",
)
_BOUNDED_FIELDS = (
    "n_trials",
    "timeout",
    "n_startup_trials",
    "n_ei_candidates",
    "gamma",
    "pruner_startup_trials",
    "heartbeat_interval",
    "max_retry",
)


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """How to run a study: where it is stored, which sampler proposes trials, and how many.

    Args:
        study_name: name of the study in the storage; the same name resumes it.
        n_trials: finished (COMPLETE or PRUNED) trials the study must hold in total, counting all
            workers and earlier runs; FAIL trials do not count.
        storage: SQLAlchemy URL (``sqlite:///path.db``, ``postgresql+psycopg://user:pass@host/db``);
            ``None`` means ``sqlite:///<run_dir>/study.db``.
        sampler: ``"tpe"``, ``"random"`` or ``"nsga2"`` (see :func:`create_sampler`).
        timeout: wall-clock budget of this call in seconds, or ``None``. Checked between trials:
            a running trial is never cut short.
        seed: seed of the sampler, or ``None`` (drawn from the OS). Trial k's proposal is drawn
            with the seed (seed, k) (:class:`~autorobust.search.samplers.TrialSeededSampler`):
            two identical single-worker studies propose identical trials, a resumed study goes
            on as an uninterrupted one would and never replays its first proposals, and workers
            that share the seed propose different trials, because they hold different numbers.
        n_startup_trials: TPE's random trials before modelling.
        n_ei_candidates: TPE's candidates per proposal.
        gamma: TPE's fraction of "good" trials in (0, 1]; ``None`` keeps Optuna's
            ``min(ceil(0.1 n), 25)``.
        multivariate: multivariate TPE.
        pruner: ``"median"`` or ``"none"`` (see :func:`~autorobust.search.samplers.create_pruner`).
        pruner_startup_trials: completed trials before the pruner may stop any trial.
        pruner_warmup_steps: reported steps (epochs) of each trial that are never pruned.
        directions: ``"maximize"`` / ``"minimize"`` per objective value; must match a resumed
            study.
        heartbeat_interval: seconds between a running trial's heartbeats (integer >= 1).
        grace_period: seconds without a heartbeat after which a trial counts as dead; ``None``
            means ``2 * heartbeat_interval``. Must exceed ``heartbeat_interval``.
        max_retry: how often a dead worker's trial is re-queued with the same parameters.
        max_consecutive_failures: this worker gives up with :class:`AutorobustError` after this
            many of its own trials fail in a row (a broken objective would otherwise fail
            forever); ``None`` never gives up.
        show_progress_bar: show Optuna's tqdm progress bar.
        space: a JSON-able description of the search space (and of anything else that makes
            trial values comparable, such as the fitness); stored with a new study, and a resumed
            study must match it, else :class:`ConfigError` names the keys that changed. None: not
            checked.
    """

    study_name: str
    n_trials: int
    storage: str | None = None
    sampler: Literal["tpe", "random", "nsga2"] = "tpe"
    timeout: float | None = None
    seed: int | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    gamma: float | None = None
    multivariate: bool = False
    pruner: Literal["median", "none"] = "median"
    # The defaults of SearchConfig (see its docstring for the measurement behind them).
    pruner_startup_trials: int = 10
    pruner_warmup_steps: int = 5
    directions: tuple[Direction, ...] = ("maximize",)
    heartbeat_interval: int = 60
    grace_period: int | None = None
    max_retry: int = 3
    max_consecutive_failures: int | None = 10
    show_progress_bar: bool = False
    space: Mapping[str, Any] | None = None

    prevalidated: InitVar[bool] = False
    """Internal: set by :meth:`from_config`, whose values pydantic has checked already."""

    @classmethod
    def from_config(
        cls,
        search: SearchConfig,
        *,
        study_name: str,
        space: Mapping[str, Any] | None,
        directions: tuple[Direction, ...] = ("maximize",),
        pruner_warmup_steps: int,
    ) -> SearchSettings:
        """The settings of a config's ``search`` section, which pydantic validated: its fields
        are taken as they are (``study_name`` is the default of ``search.study_name``), and only
        what the section does not hold (``directions``, ``pruner_warmup_steps``) is checked."""
        return cls(
            study_name=search.study_name or study_name,
            **{name: getattr(search, name) for name in _CONFIG_FIELDS},
            pruner_warmup_steps=pruner_warmup_steps,
            directions=directions,
            space=space,
            prevalidated=True,
        )

    def __post_init__(self, prevalidated: bool) -> None:
        if not self.study_name:
            raise ConfigError("study_name: expected a non-empty string, got ''")
        if not prevalidated:
            # The bounds of the config's search section, written once (on SearchConfig); a
            # config's section was checked by pydantic against them already.
            for name in _BOUNDED_FIELDS:
                check_search_setting(name, getattr(self, name))
        if self.sampler not in sampler_names():
            valid = ", ".join(sampler_names())
            raise UnknownNameError(f"sampler: unknown sampler {self.sampler!r}; valid: {valid}")
        if self.pruner not in pruner_names():
            valid = ", ".join(pruner_names())
            raise UnknownNameError(f"pruner: unknown pruner {self.pruner!r}; valid: {valid}")
        if self.pruner_warmup_steps < 0:
            raise ConfigError(
                f"pruner_warmup_steps: expected an integer >= 0, got {self.pruner_warmup_steps}"
            )
        if not self.directions or any(d not in ("maximize", "minimize") for d in self.directions):
            raise ConfigError(
                "directions: expected one or more of 'maximize'/'minimize', "
                f"got {list(self.directions)}"
            )
        # A grace period no longer than the heartbeat interval would declare live trials dead.
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            raise ConfigError(
                f"grace_period: expected seconds > heartbeat_interval ({self.heartbeat_interval})"
                f" or null, got {self.grace_period}"
            )
        if self.max_consecutive_failures is not None and self.max_consecutive_failures < 1:
            raise ConfigError(
                "max_consecutive_failures: expected an integer >= 1 or null, "
                f"got {self.max_consecutive_failures}"
            )

    @property
    def grace_seconds(self) -> int:
        """Seconds without a heartbeat after which a running trial counts as dead."""
        return 2 * self.heartbeat_interval if self.grace_period is None else self.grace_period

    def storage_url(self, run_dir: Path) -> str:
        """The SQLAlchemy URL of the study: ``storage``, or an SQLite file in ``run_dir``."""
        if self.storage is not None:
            return self.storage
        return f"sqlite:///{(Path(run_dir) / 'study.db').resolve()}"


def _create_sampler(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    def build(seed: int | None) -> optuna.samplers.BaseSampler:
        return create_sampler(
            settings.sampler,
            seed=seed,
            n_startup_trials=settings.n_startup_trials,
            n_ei_candidates=settings.n_ei_candidates,
            gamma=settings.gamma,
            multivariate=settings.multivariate,
        )

    return build(None) if settings.seed is None else TrialSeededSampler(build, settings.seed)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(previous, optuna.logging.WARNING))
    optimize_logger = logging.getLogger("optuna.study._optimize")
    optimize_logger.addFilter(_not_a_failed_trial_record)
    try:
        yield
    finally:
        optimize_logger.removeFilter(_not_a_failed_trial_record)
        optuna.logging.set_verbosity(previous)


def _not_a_failed_trial_record(record: logging.LogRecord) -> bool:
    # Optuna logs a failed trial as two warnings, one with a traceback; we log one line instead.
    message = record.getMessage()
    return not (message.startswith("Trial ") and " failed " in message)


def open_study(
    settings: SearchSettings, run_dir: Path, *, first_params: Mapping[str, Any] | None = None
) -> optuna.Study:
    """Create the study ``settings.study_name`` or resume it if the storage already holds it.

    The storage is an Optuna ``RDBStorage`` with heartbeats (``heartbeat_interval``,
    ``grace_period``) and a retry callback: a trial whose worker died is marked FAIL by the next
    worker that checks and re-queued with the same parameters, at most ``max_retry`` times.
    Workers may open a fresh storage at the same instant: the schema, the study and the first
    trial are created once (see :func:`open_lock`), and an open that loses a creation race
    anyway is retried.

    Args:
        settings: the search settings.
        run_dir: folder of the default SQLite storage; created if needed.
        first_params: parameters of a trial to run first: enqueued unless the study already
            holds a queued, running or finished trial with them (a failed one, e.g. interrupted,
            is queued again); checked and enqueued under the open lock, so workers started
            together enqueue it once.

    Raises:
        ConfigError: the storage URL is malformed, or the stored study has other directions or
            another search space.
        AutorobustError: the database driver is missing (``pip install "autorobust[postgres]"``
            for PostgreSQL) or the database cannot be reached; the message hides the password.
    """
    url = settings.storage_url(Path(run_dir))
    if settings.storage is None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    parsed = parse_url(url)
    jitter = random.Random()  # spreads the retries of racing workers; not part of any result
    with _quiet_optuna():
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            try:
                with open_lock(parsed):
                    return open_locked(url, parsed, settings, first_params)
            except ImportError as error:
                raise driver_error(parsed, error) from error
            except sqlalchemy.exc.NoSuchModuleError:
                raise ConfigError(
                    f"storage: unknown database kind {parsed.drivername!r} in "
                    f"{redact_url(url)!r}; expected e.g. sqlite:///study.db or "
                    "postgresql+psycopg://user:password@host/db"
                ) from None
            except (
                sqlalchemy.exc.SQLAlchemyError,
                optuna.exceptions.StorageInternalError,
            ) as error:
                if attempt == OPEN_ATTEMPTS or not is_creation_race(error):
                    raise storage_error(url, error) from error
                _LOG.debug("opening %s raced another worker (%s); again", redact_url(url), error)
                time.sleep(jitter.uniform(0.05, 0.25) * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def open_locked(
    url: str,
    parsed: sqlalchemy.engine.URL,
    settings: SearchSettings,
    first_params: Mapping[str, Any] | None,
) -> optuna.Study:
    storage = make_storage(
        url,
        parsed,
        heartbeat_interval=settings.heartbeat_interval,
        grace_period=settings.grace_period,
        max_retry=settings.max_retry,
    )
    study = optuna.create_study(
        storage=storage,
        sampler=_create_sampler(settings),
        pruner=create_pruner(
            settings.pruner,
            startup_trials=settings.pruner_startup_trials,
            warmup_steps=settings.pruner_warmup_steps,
        ),
        study_name=settings.study_name,
        directions=list(settings.directions),
        load_if_exists=True,
    )
    stored = tuple(direction.name.lower() for direction in study.directions)
    if stored != tuple(settings.directions):
        raise ConfigError(
            f"directions: study {settings.study_name!r} in {redact_url(url)} was created with "
            f"{list(stored)}, got {list(settings.directions)}; use another study name"
        )
    if settings.space is not None:
        _check_space(study, settings.space, redact_url(url))
    if first_params is not None and not _holds_trial_with(study, first_params):
        study.enqueue_trial(dict(first_params))
    return study


def _holds_trial_with(study: optuna.Study, params: Mapping[str, Any]) -> bool:
    """Whether a trial with ``params`` is queued, running or finished (COMPLETE or PRUNED).

    Unlike Optuna's ``skip_if_exists``, a FAILed trial does not count: a first trial that was
    interrupted (Ctrl-C) or crashed is queued again when the study resumes.
    """
    wanted = dict(params)
    for trial in study.get_trials(deepcopy=False, states=_HOLDING_BUDGET):
        if trial.state == TrialState.WAITING:
            # A queued trial has no params yet; enqueue_trial keeps them as "fixed_params".
            if trial.system_attrs.get("fixed_params") == wanted:
                return True
        elif trial.params == wanted:
            return True
    return False


def _check_space(study: optuna.Study, space: Mapping[str, Any], where: str) -> None:
    """Store ``space`` with a study that has none; refuse to resume one searched over another."""
    current = json.loads(json.dumps(space, sort_keys=True))  # tuples -> lists, as stored
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        study.set_user_attr(SPACE_ATTR, current)
        return
    if stored != current:
        changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        raise ConfigError(
            f"search space: study {study.study_name!r} in {where} was created over another space "
            f"(changed: {', '.join(changed)}); restore those settings, or start a new study with "
            "another study name or run directory"
        )


class _GuardedObjective:
    """Wraps the user's objective: budget check, failure reasons, failure streak, Ctrl-C.

    Budget: trial numbers are assigned in creation order under a row lock on the study, so trial
    k runs only while fewer than ``n_trials`` trials numbered below k are finished, running or
    queued. Then, whatever the interleaving of workers, the finished trials are at most
    ``n_trials``: the highest-numbered one saw all the others. A trial that loses this race ends
    FAIL with the reason ``not run: ...`` without calling the objective; the pre-check in
    :func:`run_study` makes such races rare.
    """

    def __init__(
        self,
        objective: Callable[[optuna.Trial], float | Sequence[float]],
        *,
        study: optuna.Study,
        n_trials: int,
        n_objectives: int,
        max_consecutive_failures: int | None,
    ) -> None:
        self.objective = objective
        self.study = study
        self.n_trials = n_trials
        self.n_objectives = n_objectives
        self.max_consecutive_failures = max_consecutive_failures
        self.current_trial: int | None = None
        self.consecutive_failures = 0
        self.last_failure = ""

    def __call__(self, trial: optuna.Trial) -> float | Sequence[float]:
        self.current_trial = trial.number
        if self._is_surplus(trial):
            trial.set_user_attr(FAIL_REASON_ATTR, _SURPLUS_REASON)
            _LOG.info("trial %d %s", trial.number, _SURPLUS_REASON)
            self.study.stop()
            raise _BudgetHeldElsewhere(_SURPLUS_REASON)
        try:
            result = self.objective(trial)
        except optuna.TrialPruned:
            self.consecutive_failures = 0
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(FAIL_REASON_ATTR, "interrupted (KeyboardInterrupt)")
            raise
        except Exception as error:
            self._record_failure(trial, one_line(f"{type(error).__name__}: {error}"))
            _LOG.debug("traceback of failed trial %d", trial.number, exc_info=True)
            raise
        reason = _invalid_result_reason(result, self.n_objectives)
        if reason is None:
            self.consecutive_failures = 0
        else:
            # Optuna itself marks the trial FAIL for this value; we only keep the reason.
            self._record_failure(trial, reason)
        return result

    def _is_surplus(self, trial: optuna.Trial) -> bool:
        holding = self.study.get_trials(deepcopy=False, states=_HOLDING_BUDGET)
        ahead = sum(1 for other in holding if other.number < trial.number)
        return ahead >= self.n_trials

    def _record_failure(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr(FAIL_REASON_ATTR, reason)
        _LOG.warning("trial %d failed: %s", trial.number, reason)
        self.consecutive_failures += 1
        self.last_failure = f"trial {trial.number}: {reason}"
        if self.is_broken():
            self.study.stop()

    def is_broken(self) -> bool:
        """Whether this worker's own trials failed ``max_consecutive_failures`` times in a row."""
        limit = self.max_consecutive_failures
        return limit is not None and self.consecutive_failures >= limit

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: forget the finished trial and log a completed one."""
        self.current_trial = None
        if trial.state == TrialState.COMPLETE:
            _LOG.info("trial %d complete: %s", trial.number, _format_values(trial.values))

    def fail_current_trial(self) -> None:
        """Mark the trial this worker was running FAIL, if Optuna has not already done so."""
        if self.current_trial is None:
            return
        # ValueError / UpdateFinishedTrialError: already finished meanwhile, nothing left running.
        with contextlib.suppress(ValueError, optuna.exceptions.UpdateFinishedTrialError):
            self.study.tell(self.current_trial, state=TrialState.FAIL, skip_if_finished=True)
        self.current_trial = None


class _BudgetHeldElsewhere(Exception):
    """Raised inside a trial that another worker's trials already make unnecessary."""


def _invalid_result_reason(result: object, n_objectives: int) -> str | None:
    values = list(result) if isinstance(result, Sequence) else [result]
    if len(values) != n_objectives:
        return f"objective returned {len(values)} values for {n_objectives} directions"
    for value in values:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return f"objective returned {value!r}, not a number"
        if math.isnan(number):
            return "objective returned nan"
    return None


def _format_values(values: Sequence[float] | None) -> str:
    if values is None:
        return "none"
    return ", ".join(f"{value:.6g}" for value in values)


def _fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def retry_dead_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Fail the running trials of dead workers (no heartbeat for the grace period) and queue
    their retries (``max_retry``); return the queued (WAITING) trials, which the next
    :func:`run_study` runs first. A caller that enqueues trials of its own (the design's
    reference designs) calls this first, so that a killed trial is resumed, not repeated."""
    _fail_stale_trials(study)
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def _heartbeat_storage(study: optuna.Study) -> HeartbeatFromStartStorage | None:
    # Optuna wraps the storage it was given in a cache; the heartbeats live in the one below.
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if isinstance(storage, HeartbeatFromStartStorage) else None


class _WaitLog:
    """Says, once per set of awaited trials, what a worker waits for and for how long at most.

    A worker waits when running trials hold the rest of the budget. They may belong to live
    workers, or to a dead one whose trial is failed and retried only after the grace period: the
    line names each trial, the age of its last heartbeat, and the seconds of the grace period
    left before a dead worker's trial would be retried.
    """

    def __init__(self) -> None:
        self.awaited: tuple[int, ...] = ()

    def __call__(self, study: optuna.Study) -> None:
        storage = _heartbeat_storage(study)
        if storage is None:
            return
        ages = storage.heartbeat_ages(storage.get_study_id_from_name(study.study_name))
        awaited = tuple(sorted(ages))
        if not awaited or awaited == self.awaited:
            return
        self.awaited = awaited
        _LOG.warning(_wait_message(ages, storage.grace_seconds))


def _wait_message(ages: Mapping[int, float | None], grace: int) -> str:
    """One line: the running trials awaited, their heartbeat ages and the grace period left."""
    numbers = sorted(ages)
    known = [age for age in ages.values() if age is not None]
    trials = ("trial " if len(numbers) == 1 else "trials ") + ", ".join(map(str, numbers))
    seen = ", ".join("none yet" if ages[n] is None else f"{ages[n]:.0f} s ago" for n in numbers)
    left = max(0.0, grace - max(known)) if known else float(grace)
    return (
        f"waiting for {trials}, running in other workers (last heartbeat: {seen}); if a worker "
        f"is dead, its trial is retried once it has sent no heartbeat for {grace} s: in "
        f"{left:.0f} s at the earliest"
    )


def run_study(
    objective: Callable[[optuna.Trial], float | Sequence[float]],
    settings: SearchSettings,
    run_dir: Path,
    *,
    first_params: Mapping[str, Any] | None = None,
) -> optuna.Study:
    """Run trials of ``objective`` until the study holds ``settings.n_trials`` finished trials.

    Finished means COMPLETE or PRUNED, counted over all workers and earlier runs of the study, so
    rerunning the same command resumes an interrupted search and an already finished study
    returns at once. Several workers (processes or machines) may call this on one storage; while
    the rest of the budget is held by other workers' running trials, a worker waits, checking
    every ``min(heartbeat_interval, 5)`` seconds and failing trials of dead workers (which
    re-queues them), and returns when the study is done.

    Args:
        objective: maps an ``optuna.Trial`` to one float per direction (a float, or a sequence
            when there are several directions). It asks for parameters with ``trial.suggest_*``
            and may report intermediate values for pruning.
        settings: storage, sampler, budget and fault-tolerance settings.
        run_dir: folder of the default SQLite storage.
        first_params: parameters of a trial to run first (enqueued once, by whichever worker
            opens the study first; skipped when the study already holds a trial with them, so a
            resumed study does not repeat it).

    Returns:
        The study, which may hold fewer finished trials than ``n_trials`` if ``timeout`` ran out.

    Raises:
        KeyboardInterrupt: on Ctrl-C, after the running trial was marked FAIL. (If the interrupt
            strikes inside Optuna's ``ask``, before the objective starts, that trial stays
            RUNNING until its heartbeat goes stale; the next run then fails and re-queues it.)
        AutorobustError: ``max_consecutive_failures`` trials of this worker failed in a row, or
            the storage could not be opened.
        ConfigError: as raised by :func:`open_study`.
    """
    study = open_study(settings, run_dir, first_params=first_params)
    guarded = _GuardedObjective(
        objective,
        study=study,
        n_trials=settings.n_trials,
        n_objectives=len(settings.directions),
        max_consecutive_failures=settings.max_consecutive_failures,
    )
    # Stops this worker's optimize loop as soon as the finished plus running trials cover the
    # budget; the outer loop then waits in case a running trial fails.
    budget_held = optuna.study.MaxTrialsCallback(
        settings.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    )
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    poll_s = min(float(settings.heartbeat_interval), _MAX_POLL_S)
    wait_log = _WaitLog()
    with _quiet_optuna():
        try:
            while True:
                counts = study_state_counts(study)
                finished = counts["COMPLETE"] + counts["PRUNED"]
                if finished >= settings.n_trials:
                    break
                if guarded.is_broken():
                    raise AutorobustError(
                        f"{guarded.consecutive_failures} trials in a row failed in this worker "
                        f"(last, {guarded.last_failure}); fix the objective or the search "
                        "settings (max_consecutive_failures)"
                    )
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                free = settings.n_trials - finished - counts["RUNNING"]
                if free <= 0:
                    _fail_stale_trials(study)
                    wait_log(study)
                    time.sleep(poll_s if left is None else min(poll_s, left))
                    continue
                study.optimize(
                    guarded,
                    n_trials=free,
                    timeout=left,
                    catch=(Exception,),
                    callbacks=[budget_held, guarded.after_trial],
                    show_progress_bar=settings.show_progress_bar,
                )
        except KeyboardInterrupt:
            guarded.fail_current_trial()
            raise
    return study


def study_state_counts(study: optuna.Study) -> dict[str, int]:
    """Number of trials in each state, keyed by every ``TrialState`` name (zeros included)."""
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts


def best_trial_summary(study: optuna.Study) -> dict[str, Any]:
    """A JSON-serialisable summary of the study's best trial(s) and its trial counts.

    Returns:
        ``{"study_name", "directions", "state_counts", "best_trial", "best_trials"}``:
        ``best_trials`` is the best trial (one objective) or the Pareto front (several), each as
        ``{"number", "value", "values", "params", "user_attrs"}``; ``value`` is the single
        objective's value (``None`` with several); ``best_trial`` is the first of
        ``best_trials`` for one objective, else ``None``. Non-finite values become ``None``
        because strict JSON has no infinity.
    """
    directions = [direction.name.lower() for direction in study.directions]
    single = len(directions) == 1
    if single:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = [study.best_trial] if complete else []
    else:
        best = list(study.best_trials)
    best_dicts = [_trial_summary(trial, single) for trial in best]
    return {
        "study_name": study.study_name,
        "directions": directions,
        "state_counts": study_state_counts(study),
        "best_trial": best_dicts[0] if single and best_dicts else None,
        "best_trials": best_dicts,
    }


def _trial_summary(trial: FrozenTrial, single: bool) -> dict[str, Any]:
    values = [_finite_or_none(value) for value in (trial.values or [])]
    return {
        "number": trial.number,
        "value": values[0] if single and values else None,
        "values": values,
        "params": _json_safe(dict(trial.params)),
        "user_attrs": _json_safe(dict(trial.user_attrs)),
    }


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return _finite_or_none(obj)
    if isinstance(obj, dict):
        return {str(key): _json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(value) for value in obj]
    return str(obj)
