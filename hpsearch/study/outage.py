"""Riding out a storage outage: storage calls that failed for want of a connection are repeated.

A PostgreSQL restart, a failover, a network blip, or a SQLite file locked beyond its busy timeout
makes a storage call fail with a connection error, often in the middle of a transaction, where
``pool_pre_ping`` cannot help. :class:`ResilientStorage` wraps a worker's storage and repeats
such a call with backoff, after replacing the pool's connections, until it succeeds or the
storage has answered nothing for ``storage.outage_timeout`` seconds; it then raises
:class:`~hpsearch.errors.StorageUnreachable` (exit code 3).

A call may fail after the database committed it (the answer was lost), so repeating it must do
no more than the first attempt did:

* Reads, ``set_trial_user_attr``/``set_trial_system_attr``, the study attrs,
  ``set_trial_intermediate_value`` and ``record_heartbeat`` are upserts: the repetition writes
  the same value again.
* ``set_trial_param``: the repetition hits the unique key, which Optuna ignores.
* ``set_trial_state_values`` to a finished state (``tell``, failing a stale trial): the
  repetition would find the trial finished and raise ``UpdateFinishedTrialError``. A trial
  already in the state and with the values asked for, finished inside the span of our
  attempts, was finished by the first attempt: the call succeeded.
* ``set_trial_state_values(RUNNING)``, taking a WAITING trial: the repetition would find it
  RUNNING and answer "another worker took it", and nobody would run it (it has no heartbeat, so
  no worker ever fails it as stale). A trial RUNNING since a moment inside our attempts is ours.
* ``create_new_trial``: a repetition would create a second trial and leave the first RUNNING
  for ever. Every trial is created with a fresh token in its system attrs (one transaction);
  before a repetition the study is searched for the token.
* ``create_new_study``: a study the first attempt created makes the repetition raise
  ``DuplicatedStudyError``; ``create_study(load_if_exists=True)`` then loads it.

Heartbeats: a heartbeat that cannot be written before the timeout is given up without an
exception (the heartbeat thread must outlive the outage; the trial thread reports it). After an
outage a worker waits a grace period before it fails other trials as stale, since their
workers' heartbeats were blocked by the same outage; a trial it does fail gets its
``fail_reason`` first.

The remaining ambiguity: two workers that fail the same stale trial at the same moment, one of
them losing its connection, may both re-queue it (a duplicate retry, never a lost trial).
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Container, Sequence
from datetime import datetime
from typing import Any, TypeVar

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study._frozen import FrozenStudy
from optuna.study._study_direction import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import DiskFull, StorageUnreachable, is_disk_full
from hpsearch.record import FAIL_REASON

log = logging.getLogger(__name__)

T = TypeVar("T")
CREATE_TOKEN_ATTR = "hpsearch:create_token"  # trial system attr: which create call made it
BACKOFF_FIRST_S = 0.25  # first wait after a failed call; doubled up to BACKOFF_MAX_S
BACKOFF_MAX_S = 2.0  # bounds the time from the server's return to the next call's success
# SQLite errors that pass: another process holds the lock, or the file is briefly unreachable.
SQLITE_TRANSIENT = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "unable to open database file",
)


class TrialLost(Exception):
    """The trial this worker runs was finished by another worker meanwhile (failed as stale
    after the worker's heartbeat stopped, and re-queued); the worker drops it and goes on."""


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def is_connection_error(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it was raised from) means the storage could not be
    reached or dropped the connection, rather than a bad request: worth repeating."""
    from sqlalchemy import exc

    for e in _chain(err):
        if isinstance(e, (exc.DisconnectionError, exc.TimeoutError)):
            return True
        if isinstance(e, exc.DBAPIError):
            if e.connection_invalidated:
                return True
            if e.orig is None:
                return isinstance(e, (exc.OperationalError, exc.InterfaceError))
            return _driver_connection_error(e.orig)
        if type(e).__module__.split(".")[0] not in ("builtins", "sqlalchemy", "optuna", "hpsearch"):
            if _driver_connection_error(e):  # raised by a driver outside SQLAlchemy's wrapping
                return True
    return False


def _driver_connection_error(e: BaseException) -> bool:
    """A DB-API driver's OperationalError/InterfaceError (PEP 249 names): the server is gone,
    refused, shutting down or starting up, or the connection broke (or a deadlock, worth
    repeating too). SQLite's OperationalError is only passing for a lock or a brief I/O error."""
    names = {c.__name__ for c in type(e).__mro__}
    if not names & {"OperationalError", "InterfaceError"}:
        return False
    if type(e).__module__.startswith("sqlite3"):
        return any(s in str(e).lower() for s in SQLITE_TRANSIENT)
    return True


def backoff_s(failures: int) -> float:
    """The wait after the ``failures``-th failed attempt in a row: doubling up to a cap, with
    jitter so that the workers of a study do not all reconnect at the same instant."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 1)) * random.uniform(0.8, 1.0)


def ride_out(what: str, call: Callable[[], T], timeout_s: float, url: str) -> T:
    """``call()``, repeated whole while it fails with a connection error, until ``timeout_s``
    have passed since the first failure; then StorageUnreachable. For work that is safe to
    repeat as a whole (study setup: every step in it loads what exists)."""
    first_failure: float | None = None
    failures = 0
    while True:
        started = time.monotonic()
        try:
            result = call()
        except StorageUnreachable:
            raise  # a storage call inside gave up after its own wait: done, not repeated
        except Exception as err:
            if not is_connection_error(err):
                raise
            reason = connection_error_reason(err)
            now = time.monotonic()
            if first_failure is None:
                first_failure = started  # the outage began when the failed call did
                log.warning(
                    "storage %s unreachable (%s: %s); retrying for up to %g s",
                    url,
                    what,
                    reason,
                    timeout_s,
                )
            if now - first_failure >= timeout_s:
                raise StorageUnreachable(
                    f"storage {url} unreachable for {timeout_s:g} s: {reason}"
                ) from None
            failures += 1
            time.sleep(backoff_s(failures))
            continue
        if first_failure is not None:
            log.warning("storage %s is back after %.1f s", url, time.monotonic() - first_failure)
        return result


def connection_error_reason(err: BaseException) -> str:
    """The driver's first line for a connection error (no SQL, no background link)."""
    from sqlalchemy import exc

    for e in _chain(err):
        if isinstance(e, exc.DBAPIError) and e.orig is not None:
            e = e.orig
        elif isinstance(e, exc.SQLAlchemyError) or isinstance(e, optuna.exceptions.OptunaError):
            continue
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        return lines[0] if lines else type(e).__name__
    return type(err).__name__


class OneLineSqlWarnings(logging.Filter):
    """Optuna's RDB storage logs a failed query whole ("Caught an error from sqlalchemy: ...",
    then the SQL, its parameters and a link: 9 lines per call during an outage); keep the
    driver's first line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\n" in message and message.startswith("Caught an error from sqlalchemy"):
            first = message.splitlines()[0]
            record.msg, record.args = f"{first} (query repeated the slower way)", None
        return True


ONE_LINE_SQL = OneLineSqlWarnings()
OPTUNA_RDB_LOGGER = "optuna.storages._rdb.storage"


class ResilientStorage(BaseStorage, BaseHeartbeat):
    """An Optuna storage that rides out outages of the ``RDBStorage`` under it (module doc).

    Args:
        rdb: the worker's storage; its engine's pool is replaced after a connection error.
        timeout_s: how long the storage may answer nothing before a call gives up.
        url: the storage URL with its password hidden, for messages.
        backend: the storage the calls go to; default Optuna's cache over ``rdb`` (what
            ``optuna.create_study`` would use).
    """

    def __init__(
        self, rdb: RDBStorage, timeout_s: float, url: str, backend: BaseStorage | None = None
    ) -> None:
        self.rdb, self.timeout_s, self.url = rdb, float(timeout_s), url
        self.backend = backend if backend is not None else optuna.storages._CachedStorage(rdb)
        self.unreachable: StorageUnreachable | None = None  # set when a call gave up
        self._lock = threading.Lock()
        self._down_since: float | None = None  # monotonic time of the outage's first failure
        self._recovered_at: float | None = None  # monotonic time the last outage ended
        self._local = threading.local()
        logging.getLogger(OPTUNA_RDB_LOGGER).addFilter(ONE_LINE_SQL)  # once: a set of filters

    # ------------------------------------------------------------------ the retry loop

    def _call(
        self,
        what: str,
        call: Callable[[], T],
        went_through: Callable[[], tuple[bool, Any]] | None = None,
        give_up_quietly: bool = False,
    ) -> T:
        """``call()``, repeated while it fails with a connection error, until the storage has
        been unreachable for ``timeout_s``. Before a repetition, ``went_through()`` says whether
        the failed attempt did reach the database after all (and what the call returns)."""
        if getattr(self._local, "single_attempt", False):
            return call()
        failures = 0
        while True:
            started = time.monotonic()
            try:
                if failures and went_through is not None:
                    done, result = went_through()
                    if done:
                        self._up()
                        return result
                result = call()
            except Exception as err:
                if is_disk_full(err):
                    return self._full(what, err, give_up_quietly)
                if not is_connection_error(err):
                    raise
                failures += 1
                if not self._down(what, err, give_up_quietly, started):
                    return None  # a heartbeat given up
                time.sleep(backoff_s(failures))
                continue
            self._up()
            return result

    def _down(self, what: str, err: BaseException, give_up_quietly: bool, started: float) -> bool:
        """Record a failed call that began at ``started`` (a call may wait long before it fails:
        a SQLite lock's busy timeout); False (quiet) or StorageUnreachable once the time is
        up."""
        reason = connection_error_reason(err)
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = started
                log.warning(
                    "storage %s unreachable (%s: %s); retrying for up to %g s",
                    self.url,
                    what,
                    reason,
                    self.timeout_s,
                )
            down_for = now - self._down_since
        self._replace_connections()
        if down_for < self.timeout_s:
            return True
        if give_up_quietly:
            log.warning(
                "storage %s: %s given up after %.0f s (%s)", self.url, what, down_for, reason
            )
            return False
        error = StorageUnreachable(
            f"storage {self.url} unreachable for {self.timeout_s:g} s: {reason}"
        )
        with self._lock:
            self.unreachable = self.unreachable or error
        raise error from None

    def _full(self, what: str, err: BaseException, give_up_quietly: bool) -> None:
        """A write the storage refused for want of disk space: DiskFull (exit code 4) at once,
        since waiting would not free any; a heartbeat is given up with a warning."""
        reason = connection_error_reason(err)
        if give_up_quietly:
            log.warning("storage %s: %s not written, the disk is full (%s)", self.url, what, reason)
            return None
        error = DiskFull(
            f"storage {self.url}: {what} failed, its disk is full ({reason}); free space and "
            "run the same command again (the trial in progress resumes from its checkpoint)"
        )
        with self._lock:
            self.unreachable = self.unreachable or error
        raise error from None

    def _up(self) -> None:
        if self._down_since is None:  # unlocked fast path: no outage
            return
        with self._lock:
            if self._down_since is None:
                return
            now = time.monotonic()
            log.warning("storage %s is back after %.1f s", self.url, now - self._down_since)
            self._down_since, self._recovered_at = None, now

    def _replace_connections(self) -> None:
        """Drop this thread's session and every pooled connection: the next attempt connects
        afresh instead of reusing a connection the server has closed."""
        try:
            self.rdb.scoped_session.remove()
        except Exception:  # closing a dead connection may fail; it is discarded either way
            pass
        self.rdb.engine.dispose()

    def single_attempt(self) -> _SingleAttempt:
        """``with storage.single_attempt():`` calls in this thread are tried once (the last
        writes of a worker that gives up)."""
        return _SingleAttempt(self._local)

    # ------------------------------------------------------------------ calls that need care

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        token = uuid.uuid4().hex
        if template_trial is None:  # what Optuna creates then: a bare RUNNING trial
            template = FrozenTrial(
                number=-1,
                state=TrialState.RUNNING,
                value=None,
                values=None,
                datetime_start=datetime.now(),
                datetime_complete=None,
                params={},
                distributions={},
                user_attrs={},
                system_attrs={},
                intermediate_values={},
                trial_id=-1,
            )
        else:
            template = copy.deepcopy(template_trial)
        # A fresh token also replaces the one a re-queued trial copied from the trial it retries.
        template.system_attrs = {**template.system_attrs, CREATE_TOKEN_ATTR: token}

        def created() -> tuple[bool, Any]:
            for trial in self.backend.get_all_trials(study_id, deepcopy=False):
                if trial.system_attrs.get(CREATE_TOKEN_ATTR) == token:
                    return True, trial._trial_id
            return False, None

        return self._call(
            "create_new_trial", lambda: self.backend.create_new_trial(study_id, template), created
        )

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if self.unreachable is not None and not getattr(self._local, "single_attempt", False):
            # The worker has given up: Optuna's own FAIL of the trial would come before its
            # retry; the trial loop ends it instead, retry first (hpsearch.study.loop).
            raise self.unreachable
        since = datetime.now()

        def went_through() -> tuple[bool, Any]:
            trial = self.backend.get_trial(trial_id)
            if trial.state != state:
                return False, None
            if state == TrialState.RUNNING:
                stamp = trial.datetime_start
            else:
                stamp = trial.datetime_complete
                if (trial.values is None) != (values is None) or (
                    values is not None and list(trial.values) != [float(v) for v in values]
                ):
                    return False, None
            return stamp is not None and since <= stamp <= datetime.now(), True

        return self._call(
            "set_trial_state_values",
            lambda: self.backend.set_trial_state_values(trial_id, state, values),
            went_through,
        )

    def record_heartbeat(self, trial_id: int) -> None:
        self._call(
            "record_heartbeat",
            lambda: self.backend.record_heartbeat(trial_id),
            give_up_quietly=True,
        )

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        grace = self.rdb.grace_period or 2 * (self.rdb.heartbeat_interval or 0)
        recovered = self._recovered_at
        if recovered is not None and time.monotonic() - recovered < grace:
            return []  # their heartbeats were blocked by the outage we just rode out
        stale = self._call(
            "_get_stale_trial_ids", lambda: self.backend._get_stale_trial_ids(study_id)
        )
        for trial_id in stale:  # Optuna fails them next; a finished trial takes no attrs
            try:
                self.set_trial_user_attr(
                    trial_id,
                    FAIL_REASON,
                    f"no heartbeat for {grace} s (storage.grace_period): its worker died, hung "
                    "or lost the storage",
                )
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
        return stale

    # ------------------------------------------------------------------ plain repetitions

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        return self._call(
            "create_new_study", lambda: self.backend.create_new_study(directions, study_name)
        )

    def delete_study(self, study_id: int) -> None:
        self._call("delete_study", lambda: self.backend.delete_study(study_id))

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call(
            "set_study_user_attr", lambda: self.backend.set_study_user_attr(study_id, key, value)
        )

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call(
            "set_study_system_attr",
            lambda: self.backend.set_study_system_attr(study_id, key, value),
        )

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._call(
            "get_study_id_from_name", lambda: self.backend.get_study_id_from_name(study_name)
        )

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._call(
            "get_study_name_from_id", lambda: self.backend.get_study_name_from_id(study_id)
        )

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._call(
            "get_study_directions", lambda: self.backend.get_study_directions(study_id)
        )

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(
            "get_study_user_attrs", lambda: self.backend.get_study_user_attrs(study_id)
        )

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(
            "get_study_system_attrs", lambda: self.backend.get_study_system_attrs(study_id)
        )

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._call("get_all_studies", self.backend.get_all_studies)

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: optuna.distributions.BaseDistribution,
    ) -> None:
        self._call(
            "set_trial_param",
            lambda: self.backend.set_trial_param(
                trial_id, param_name, param_value_internal, distribution
            ),
        )

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._call(
            "get_trial_id_from_study_id_trial_number",
            lambda: self.backend.get_trial_id_from_study_id_trial_number(study_id, trial_number),
        )

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._call("get_best_trial", lambda: self.backend.get_best_trial(study_id))

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._call(
            "set_trial_intermediate_value",
            lambda: self.backend.set_trial_intermediate_value(trial_id, step, intermediate_value),
        )

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call(
            "set_trial_user_attr", lambda: self.backend.set_trial_user_attr(trial_id, key, value)
        )

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call(
            "set_trial_system_attr",
            lambda: self.backend.set_trial_system_attr(trial_id, key, value),
        )

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._call("get_trial", lambda: self.backend.get_trial(trial_id))

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._call(
            "get_all_trials", lambda: self.backend.get_all_trials(study_id, deepcopy, states)
        )

    def remove_session(self) -> None:
        self.backend.remove_session()

    def get_heartbeat_interval(self) -> int | None:
        return self.rdb.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.rdb.get_heartbeat_stale_trial_callback()


class _SingleAttempt:
    def __init__(self, local: threading.local) -> None:
        self._local = local

    def __enter__(self) -> None:
        self._local.single_attempt = True

    def __exit__(self, *exc: Any) -> None:
        self._local.single_attempt = False
