"""The study's storage: one SQLAlchemy URL that every worker of a study opens.

``open_storage`` returns an Optuna ``RDBStorage`` tuned for many worker processes:

* PostgreSQL (``storage=postgres``, URL from ``HPSEARCH_STORAGE_URL``): a small connection pool per
  worker (the trial thread and the heartbeat thread), ``pool_pre_ping`` so a connection the
  server or a firewall dropped is replaced instead of failing a trial, ``pool_recycle``, and a
  connect timeout so an unreachable host fails in seconds.
* SQLite (the default file): write-ahead logging, a busy timeout, and ``BEGIN IMMEDIATE`` for
  every transaction. SQLite has no row locks; Optuna's read-then-write transactions (take a
  waiting trial, fail a stale one) would otherwise let two processes both read "WAITING" and
  both run the trial, or fail one of them with "database is locked" when both try to upgrade
  a read lock. Taking the write lock up front serialises them; the busy timeout queues them.

With :class:`Heartbeat` settings a running trial records a heartbeat; a trial whose worker died
is marked FAIL by the next worker that starts a trial, and re-queued with the same parameters
by ``RetryHeartbeatStaleTrialCallback`` (at most ``max_retry`` times).

``setup_lock`` serialises study setup (table creation, study creation, fixed trials) across
processes and machines, so many workers can start at the same moment on a fresh database.
``load_existing_study`` opens a study that must already exist (report, confirmation).

Every failure to open the storage is an ``HpsearchError`` of one line that names the URL with its
password hidden and says what went wrong: host unreachable, authentication failed, database
missing, driver missing.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import logging
import os
import time
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig

from hpsearch.config import StorageConfig
from hpsearch.errors import HpsearchError, safe_url
from hpsearch.record import FAIL_REASON
from hpsearch.tables import name_list, short_name

log = logging.getLogger(__name__)

SQLITE_TIMEOUT_S = 60  # seconds a writer waits for the file lock before "database is locked"
#                        (at most storage.outage_timeout, which bounds the whole wait)
CONNECT_TIMEOUT_S = 10  # seconds to reach a database server before giving up
POOL_OVERFLOW = 2  # extra connections a worker may open beyond pool_size under a burst
# One PostgreSQL advisory lock key for study setup; advisory locks are per database.
SETUP_LOCK_KEY = zlib.crc32(b"hpsearch study setup")
SETUP_RETRIES = 5  # table creation may still race a process that does not take the lock
URL_EXAMPLE = "postgresql+psycopg2://user:pass@host:5432/db"
_DEFAULTS = StorageConfig()  # the constructors' defaults are the config schema's


@dataclass(frozen=True)
class Heartbeat:
    """Liveness of running trials: every ``interval`` s a running trial's worker writes a
    heartbeat; a trial without one for ``grace_period`` s is failed and retried up to
    ``max_retry`` times."""

    interval: int = _DEFAULTS.heartbeat_interval
    grace_period: int = _DEFAULTS.grace_period
    max_retry: int = _DEFAULTS.max_retry

    @classmethod
    def from_config(cls, storage_cfg: DictConfig) -> Heartbeat:
        return cls(
            int(storage_cfg.heartbeat_interval),
            int(storage_cfg.grace_period),
            int(storage_cfg.max_retry),
        )

    def retry_callback(self) -> Requeue:
        return Requeue(self.max_retry)


class Requeue:
    """Re-queue a failed trial (Optuna's ``RetryHeartbeatStaleTrialCallback``: same parameters,
    system attrs inherited, at most ``max_retry`` retries of one trial), without the failed
    trial's ``fail_reason``: the retry has not failed."""

    def __init__(self, max_retry: int) -> None:
        with warnings.catch_warnings():  # experimental since 2.8, stable in practice
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if _has_retry(study, trial.number):  # re-queued already (before its FAIL was written)
            return
        if FAIL_REASON in trial.user_attrs:
            trial = copy.deepcopy(trial)
            trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != FAIL_REASON}
        self._retry(study, trial)


def _has_retry(study: optuna.Study, number: int) -> bool:
    """Whether a trial of ``study`` retries trial ``number`` (the last of its retry history)."""
    return any(
        t.system_attrs.get("retry_history", [])[-1:] == [number]
        for t in study.get_trials(deepcopy=False)
    )


@dataclass(frozen=True)
class Pool:
    """Connections of one worker process: the pool (PostgreSQL) or the lock wait (SQLite)."""

    size: int = _DEFAULTS.pool_size  # the trial thread and the heartbeat thread
    recycle_s: int = _DEFAULTS.pool_recycle  # reconnect before idle connections are closed
    sqlite_busy_s: float = SQLITE_TIMEOUT_S  # how long a SQLite call waits for the file lock

    @classmethod
    def from_config(cls, storage_cfg: DictConfig) -> Pool:
        return cls(
            int(storage_cfg.pool_size),
            int(storage_cfg.pool_recycle),
            min(float(SQLITE_TIMEOUT_S), float(storage_cfg.outage_timeout)),
        )


def _parse(url: Any):
    from sqlalchemy.engine import make_url

    if not url:
        raise HpsearchError(
            "storage.url is not set: export HPSEARCH_STORAGE_URL="
            f"{URL_EXAMPLE} or pass storage.url=..."
        )
    try:
        return make_url(str(url))
    except Exception:
        raise HpsearchError(
            f"storage.url={safe_url(str(url))!r} is not a database URL; expected "
            f"e.g. sqlite:///storage/hpsearch.db or {URL_EXAMPLE}"
        ) from None


def is_sqlite(url: str) -> bool:
    return str(url).startswith("sqlite")


def engine_kwargs(url: str, pool: Pool | None = None) -> dict[str, Any]:
    """SQLAlchemy engine settings for many workers sharing ``url``."""
    pool = pool or Pool()
    if is_sqlite(url):
        return {"connect_args": {"timeout": pool.sqlite_busy_s}}
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": pool.size,
        "max_overflow": POOL_OVERFLOW,
        "pool_recycle": pool.recycle_s,
    }
    if _parse(url).get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


def describe_error(url: str, err: BaseException) -> str:
    """One line for a failure to connect: what is wrong and what to check; never the password."""
    parsed = _parse(url)
    raw = getattr(err, "orig", None) or err
    lines = [line.strip() for line in str(raw).splitlines() if line.strip()]
    reason = lines[0] if lines else type(raw).__name__
    text = " ".join(lines).lower()
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    prefix = f"storage.url={safe_url(url)}: cannot open storage"
    if isinstance(err, ImportError) or isinstance(raw, ImportError):
        return (
            f"{prefix}: the database driver is not installed ({reason}); for PostgreSQL "
            "run: pip install 'hpsearch[postgres]'"
        )
    if "password authentication failed" in text or "authentication failed" in text:
        return (
            f"{prefix}: authentication failed for user {parsed.username!r}: check the user "
            "and password in HPSEARCH_STORAGE_URL / storage.url"
        )
    if "does not exist" in text and "database" in text:
        return (
            f"{prefix}: database {parsed.database!r} does not exist on {where}: create it "
            f"first (e.g. createdb -h {parsed.host} -U {parsed.username} {parsed.database})"
        )
    if "role" in text and "does not exist" in text:
        return f"{prefix}: user {parsed.username!r} does not exist on {where}"
    if any(
        s in text
        for s in (
            "connection refused",
            "could not translate host name",
            "timeout expired",
            "no route to host",
            "network is unreachable",
            "name or service not known",
            "could not connect",
        )
    ):
        return (
            f"{prefix}: no database server reachable at {where} "
            f"({_scrub(reason, parsed)}): is it running, and are host and port right?"
        )
    return f"{prefix} ({type(raw).__name__}: {_scrub(reason, parsed)[:200]})"


def _scrub(text: str, parsed) -> str:
    """Drivers may echo the connection string; never let the password through."""
    return text.replace(parsed.password, "***") if parsed.password else text


def check_connection(url: str) -> None:
    """Connect once and disconnect: a bad URL, host, password or database fails here, as an
    HpsearchError, before anything is created (SQLite: the file's directory is created)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database not in (None, "", ":memory:"):
            check_sqlite_file(url, Path(parsed.database).expanduser())
        return
    try:
        engine = create_engine(
            str(url),
            poolclass=NullPool,
            **{k: v for k, v in engine_kwargs(str(url)).items() if k == "connect_args"},
        )
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as err:
        raise HpsearchError(describe_error(str(url), err)) from None


def check_sqlite_file(url: str, path: Path) -> None:
    """A SQLite database file a worker can write: not a directory, in a directory that exists
    (created here) and is writable, itself writable when it exists. Each failure is one line,
    at once (not an outage to wait out)."""
    prefix = f"storage.url={safe_url(url)}"
    if path.is_dir():
        raise HpsearchError(f"{prefix}: {path} is a directory; name a database file in it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HpsearchError(
            f"{prefix}: cannot create the directory {path.parent} ({err.strerror})"
        ) from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise HpsearchError(
            f"{prefix}: the directory {path.parent} is not writable (SQLite writes its lock "
            "and journal files next to the database)"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise HpsearchError(f"{prefix}: {path} is not readable and writable by this user")


def _tune_sqlite(storage: optuna.storages.RDBStorage, busy_s: float) -> None:
    """WAL, busy timeout and ``BEGIN IMMEDIATE`` for every new connection (module docstring)."""
    from sqlalchemy import event

    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level, so that the "begin" hook below decides how every
        # transaction starts (the pysqlite default would BEGIN DEFERRED only before a write).
        dbapi_connection.isolation_level = None
        dbapi_connection.execute(f"PRAGMA busy_timeout = {int(busy_s * 1000)}")
        dbapi_connection.execute("PRAGMA journal_mode = WAL")  # persistent; readers never block
        # In WAL mode NORMAL cannot corrupt the file; a power cut may lose the last commits. It
        # saves an fsync per commit, and a trial makes dozens of commits.
        dbapi_connection.execute("PRAGMA synchronous = NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # drop the connections made while creating tables, before the hooks existed


def open_storage(
    url: str, heartbeat: Heartbeat | None = None, pool: Pool | None = None
) -> optuna.storages.RDBStorage:
    """An RDBStorage for ``url`` (tables created if missing); any failure is an HpsearchError.

    ``heartbeat`` turns on stale-trial detection and retries (workers); readers pass None.
    """
    try:
        return connect_storage(url, heartbeat, pool)
    except HpsearchError:
        raise
    except Exception as err:
        raise HpsearchError(describe_error(str(url), err)) from None


def connect_storage(
    url: str, heartbeat: Heartbeat | None = None, pool: Pool | None = None
) -> optuna.storages.RDBStorage:
    """:func:`open_storage` with the driver's errors as raised, for callers that tell a
    connection error (an outage: wait) from any other."""
    parsed = _parse(url)
    url = str(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"engine_kwargs": engine_kwargs(url, pool)}
    if heartbeat is not None:
        kwargs.update(
            heartbeat_interval=heartbeat.interval,
            grace_period=heartbeat.grace_period,
            heartbeat_stale_trial_callback=heartbeat.retry_callback(),
        )
    for attempt in range(SETUP_RETRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, **kwargs)
            break
        except Exception as err:
            if _is_creation_race(err) and attempt + 1 < SETUP_RETRIES:
                time.sleep(0.2 * (attempt + 1))  # another process is creating the tables
                continue
            raise
    if parsed.get_backend_name() == "sqlite":
        _tune_sqlite(storage, (pool or Pool()).sqlite_busy_s)
    return storage


def _is_creation_race(err: BaseException) -> bool:
    text = str(getattr(err, "orig", None) or err).lower()
    return any(
        s in text
        for s in ("already exists", "duplicate key", "unique constraint", "database is locked")
    )


@contextlib.contextmanager
def setup_lock(url: str) -> Iterator[None]:
    """Hold a lock shared by every process that sets up a study in ``url``'s database.

    PostgreSQL: a session advisory lock (works across machines; it ends with the connection, so
    a server restart cannot leave it held). SQLite: an exclusive ``flock`` on
    ``<file>.setup.lock`` (processes on one machine). Other backends: no lock (table and study
    creation still retry on conflict, but fixed trials may be enqueued twice). A failure to
    connect is raised as the driver raised it (``check_connection`` has vetted the URL).
    """
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(
            str(url),
            poolclass=NullPool,
            **{k: v for k, v in engine_kwargs(str(url)).items() if k == "connect_args"},
        )
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": SETUP_LOCK_KEY})
                conn.commit()
                try:
                    yield
                finally:
                    try:
                        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SETUP_LOCK_KEY})
                        conn.commit()
                    except Exception:  # connection lost: the lock ended with it
                        log.debug("setup lock: unlock failed; the lock ended with the connection")
        finally:
            engine.dispose()
    elif backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(f"{path}.setup.lock", "a+")
        except OSError as err:
            raise HpsearchError(
                f"storage.url={safe_url(url)}: cannot create the setup lock "
                f"{path}.setup.lock ({err.strerror})"
            ) from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield


def load_existing_study(url: str, name: str) -> optuna.Study:
    """The study ``name`` in the storage at ``url``; an unknown name is an HpsearchError that
    lists the studies there. A SQLite file that does not exist is not created."""
    try:
        parsed = _parse(url)
    except HpsearchError:
        parsed = None
    if (
        parsed is not None
        and parsed.get_backend_name() == "sqlite"
        and parsed.database not in (None, "", ":memory:")
        and not Path(parsed.database).expanduser().exists()
    ):
        raise HpsearchError(
            f"storage.url={safe_url(url)}: no such database file; run a search first "
            "or point storage.url at the search's storage"
        )
    storage = open_storage(url)
    names = sorted(s.study_name for s in storage.get_all_studies())
    if name not in names:
        raise HpsearchError(
            f"study.name={short_name(name)!r} is not in storage {safe_url(url)}; studies "
            f"there: {name_list(names)}"
        )
    return optuna.load_study(study_name=name, storage=storage)
