"""Riding out storage outages: which repeated storage calls are safe, and how each is made so.

Unit tests run a real ``RDBStorage`` (a SQLite file) under :class:`ResilientStorage`, with
connection failures injected between the two: a failure *before* the call (the request never
reached the database) or *after* it (the database committed, the answer was lost: the case that
makes a blind repetition wrong). The PostgreSQL tests restart and stop a private server for real.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from pgcluster import pg_cluster  # noqa: F401  (fixture)

from hpsearch.errors import StorageUnreachable
from hpsearch.record import FAIL_REASON
from hpsearch.study.loop import run_trials
from hpsearch.study.outage import (
    CREATE_TOKEN_ATTR,
    ResilientStorage,
    is_connection_error,
)
from hpsearch.study.storage import Heartbeat, Pool, open_storage

pytestmark = [
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used"),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]
GRACE_S = 2  # storage.grace_period of the unit tests' storage
COMPLETE, FAIL, RUNNING, WAITING = (
    TrialState.COMPLETE,
    TrialState.FAIL,
    TrialState.RUNNING,
    TrialState.WAITING,
)


def connection_lost() -> optuna.exceptions.StorageInternalError:
    """What RDBStorage raises when the server closes the connection during a call."""
    import psycopg2
    from sqlalchemy import exc

    orig = psycopg2.OperationalError(
        "server closed the connection unexpectedly\n\tThis "
        "probably means the server terminated abnormally"
    )
    try:
        try:
            raise exc.OperationalError(
                "UPDATE trials SET ...", {}, orig, connection_invalidated=True
            )
        except exc.OperationalError as err:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit."
            ) from err
    except optuna.exceptions.StorageInternalError as err:
        return err


class Faulty:
    """A storage backend that makes planned calls fail: ``fail(name, "before" | "after", n)``;
    ``down`` (a callable) fails every call while it returns True."""

    def __init__(self, inner: optuna.storages.BaseStorage) -> None:
        self.inner = inner
        self.plans: dict[str, list[str]] = {}
        self.calls: dict[str, int] = {}
        self.down: Callable[[], bool] = lambda: False

    def fail(self, name: str, when: str, times: int = 1) -> None:
        self.plans.setdefault(name, []).extend([when] * times)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            plan = self.plans.get(name)
            when = plan.pop(0) if plan else None
            if when == "before" or self.down():
                raise connection_lost()
            result = method(*args, **kwargs)
            if when == "after":
                raise connection_lost()
            return result

        return call


@pytest.fixture
def stores(tmp_path: Path) -> tuple[optuna.storages.RDBStorage, Faulty, ResilientStorage]:
    """(the RDBStorage, the fault injector over its cache, the resilient storage over that)."""
    rdb = open_storage(f"sqlite:///{tmp_path / 'study.db'}", Heartbeat(1, GRACE_S, 3), Pool())
    faulty = Faulty(optuna.storages._CachedStorage(rdb))
    storage = ResilientStorage(rdb, 30, "sqlite:///study.db", backend=faulty)
    yield rdb, faulty, storage
    rdb.engine.dispose()


def new_study(storage: optuna.storages.BaseStorage) -> optuna.Study:
    return optuna.create_study(storage=storage, study_name="s", direction="maximize")


# ----------------------------------------------------------------------------- classification


def test_connection_errors_are_told_from_bad_requests() -> None:
    import psycopg2
    from sqlalchemy import exc

    def wrapped(orig: Exception, cls: type = exc.OperationalError) -> Exception:
        return cls("SELECT 1", {}, orig)

    assert is_connection_error(connection_lost())
    assert is_connection_error(wrapped(psycopg2.OperationalError("Connection refused")))
    assert is_connection_error(
        wrapped(psycopg2.InterfaceError("connection already closed"), exc.InterfaceError)
    )
    assert is_connection_error(wrapped(sqlite3.OperationalError("database is locked")))
    assert not is_connection_error(wrapped(sqlite3.OperationalError("no such table: trials")))
    assert not is_connection_error(
        wrapped(psycopg2.IntegrityError("duplicate key"), exc.IntegrityError)
    )
    assert is_connection_error(sqlite3.OperationalError("database is locked"))  # unwrapped
    assert is_connection_error(psycopg2.OperationalError("the database system is starting up"))
    assert not is_connection_error(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not is_connection_error(optuna.exceptions.UpdateFinishedTrialError("finished"))
    assert not is_connection_error(ValueError("x"))


@pytest.mark.parametrize("value", ["0", "-5", "inf"])
def test_outage_timeout_must_be_a_positive_number_of_seconds(value: str) -> None:
    from hpsearch.app import compose_config
    from hpsearch.errors import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"^storage.outage_timeout=.* is invalid: must be a "
        r"finite number of seconds > 0",
    ):
        compose_config([f"storage.outage_timeout={value}"])
    assert compose_config(["storage.outage_timeout=2.5"]).storage.outage_timeout == 2.5


# ----------------------------------------------------------------------------- each storage call


def test_repeated_attr_param_and_value_writes_store_each_once(stores) -> None:
    """set_user_attr / set_system_attr / report / suggest whose answer was lost: the repetition
    writes the same row again (upsert, or a unique key Optuna ignores)."""
    rdb, faulty, storage = stores
    study = new_study(storage)
    trial = study.ask()
    for name in (
        "set_trial_user_attr",
        "set_trial_system_attr",
        "set_trial_intermediate_value",
        "set_trial_param",
    ):
        faulty.fail(name, "after")
    trial.set_user_attr("energy", 0.5)
    trial.storage.set_trial_system_attr(trial._trial_id, "k", [1, 2])
    trial.report(0.25, step=1)
    x = trial.suggest_float("x", 0.0, 1.0)
    assert all(
        faulty.calls[name] == 2
        for name in (
            "set_trial_user_attr",
            "set_trial_system_attr",
            "set_trial_intermediate_value",
            "set_trial_param",
        )
    )
    stored = rdb.get_trial(trial._trial_id)
    assert stored.user_attrs == {"energy": 0.5} and stored.system_attrs["k"] == [1, 2]
    assert stored.intermediate_values == {1: 0.25} and stored.params == {"x": x}


def test_a_tell_that_went_through_is_a_success(stores) -> None:
    """A blind repetition of a committed tell raises UpdateFinishedTrialError (the worker would
    crash); the trial holding the state and value asked for means it went through."""
    rdb, faulty, storage = stores
    study = new_study(storage)
    trial = study.ask()
    rdb.set_trial_state_values(trial._trial_id, COMPLETE, [0.75])  # the lost first attempt
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        rdb.set_trial_state_values(trial._trial_id, COMPLETE, [0.75])  # a blind repetition

    other = study.ask()
    faulty.fail("set_trial_state_values", "after")
    study.tell(other, 0.5)
    assert faulty.calls["set_trial_state_values"] == 1  # not repeated: it had gone through
    stored = rdb.get_trial(other._trial_id)
    assert stored.state == COMPLETE and stored.value == 0.5


def test_a_tell_on_a_trial_another_worker_failed_is_refused(stores) -> None:
    rdb, faulty, storage = stores
    study = new_study(storage)
    trial = study.ask()
    rdb.set_trial_state_values(trial._trial_id, FAIL)  # failed as stale meanwhile
    faulty.fail("set_trial_state_values", "before")
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(trial._trial_id, COMPLETE, [0.5])
    assert rdb.get_trial(trial._trial_id).state == FAIL


def test_taking_a_waiting_trial_that_went_through_is_ours(stores) -> None:
    """ask() takes an enqueued trial; the answer is lost. Repeated blindly, the take reads
    'another worker has it', and the trial would stay RUNNING with no worker and no heartbeat."""
    rdb, faulty, storage = stores
    study = new_study(storage)
    study.enqueue_trial({"x": 0.125})
    faulty.fail("set_trial_state_values", "after")
    trial = study.ask()
    assert trial.suggest_float("x", 0.0, 1.0) == 0.125  # the enqueued trial
    ts = rdb.get_all_trials(study._study_id)
    assert [(t.number, t.state) for t in ts] == [(0, RUNNING)]  # no second trial


def test_a_waiting_trial_another_worker_took_is_not_ours(stores) -> None:
    rdb, faulty, storage = stores
    study = new_study(storage)
    study.enqueue_trial({"x": 0.125})
    waiting = rdb.get_all_trials(study._study_id)[0]
    assert rdb.set_trial_state_values(waiting._trial_id, RUNNING)  # the other worker's take
    faulty.fail("set_trial_state_values", "before")
    assert storage.set_trial_state_values(waiting._trial_id, RUNNING) is False


def test_creating_a_trial_that_went_through_is_not_repeated(stores) -> None:
    """create_new_trial committed, answer lost: a repetition would leave an orphan RUNNING
    trial; the creation token finds the first one instead."""
    rdb, faulty, storage = stores
    study = new_study(storage)
    faulty.fail("create_new_trial", "after")
    trial = study.ask()
    assert faulty.calls["create_new_trial"] == 1
    ts = rdb.get_all_trials(study._study_id)
    assert [(t.number, t.state) for t in ts] == [(0, RUNNING)]
    assert ts[0]._trial_id == trial._trial_id and CREATE_TOKEN_ATTR in ts[0].system_attrs
    faulty.fail("create_new_trial", "before")  # never reached the database: created now
    study.enqueue_trial({"x": 0.5})
    assert faulty.calls["create_new_trial"] == 3
    assert [t.state for t in rdb.get_all_trials(study._study_id)] == [RUNNING, WAITING]


def test_failing_a_stale_trial_once_queues_one_retry(stores) -> None:
    """fail_stale_trials' FAIL went through, answer lost: the trial is failed and re-queued
    exactly once, with its reason."""
    rdb, faulty, storage = stores
    study = new_study(storage)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    storage.record_heartbeat(trial._trial_id)
    time.sleep(GRACE_S + 1.5)  # the grace period passes without a heartbeat
    faulty.fail("set_trial_state_values", "after")
    optuna.storages.fail_stale_trials(study)
    ts = rdb.get_all_trials(study._study_id)
    assert [t.state for t in ts] == [FAIL, WAITING]
    assert ts[0].user_attrs[FAIL_REASON].startswith(f"no heartbeat for {GRACE_S} s")
    assert ts[1].system_attrs["failed_trial"] == 0 and ts[1].params == ts[0].params
    assert FAIL_REASON not in ts[1].user_attrs  # the retry has not failed


def test_after_an_outage_stale_trials_wait_a_grace_period(stores) -> None:
    """Every worker's heartbeat was blocked by the outage: a worker that just rode it out does
    not fail the others' trials before they have had a grace period to beat again."""
    rdb, faulty, storage = stores
    study = new_study(storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    time.sleep(GRACE_S + 1.5)
    faulty.fail("get_all_trials", "before")
    study.get_trials()  # an outage, ridden out
    assert storage._get_stale_trial_ids(study._study_id) == []
    storage._recovered_at = time.monotonic() - GRACE_S  # a grace period later
    assert storage._get_stale_trial_ids(study._study_id) == [trial._trial_id]


def test_past_the_timeout_a_call_gives_up_in_one_line_and_a_heartbeat_quietly(stores) -> None:
    rdb, faulty, storage = stores
    study = new_study(storage)
    trial = study.ask()
    storage.timeout_s = 0.5
    faulty.down = lambda: True
    storage.record_heartbeat(trial._trial_id)  # no exception: the heartbeat thread lives on
    assert faulty.calls["record_heartbeat"] > 1
    with pytest.raises(StorageUnreachable) as info:
        trial.set_user_attr("a", 1)
    assert str(info.value) == (
        "storage sqlite:///study.db unreachable for 0.5 s: server closed "
        "the connection unexpectedly"
    )
    assert info.value.exit_code == 3 and storage.unreachable is info.value
    faulty.down = lambda: False
    trial.set_user_attr("a", 1)  # the storage is back: calls succeed again
    assert rdb.get_trial(trial._trial_id).user_attrs == {"a": 1}


def test_other_errors_are_not_repeated(stores) -> None:
    rdb, faulty, storage = stores
    study = new_study(storage)
    trial = study.ask()
    rdb.set_trial_state_values(trial._trial_id, FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        trial.set_user_attr("a", 1)
    assert faulty.calls["set_trial_user_attr"] == 1


# ----------------------------------------------------------------------------- the trial loop


def test_a_lost_trial_is_dropped_and_another_run_in_its_place(stores, caplog) -> None:
    """Another worker fails this worker's trial 1 as stale and re-queues it while it runs: the
    worker drops trial 1 without a crash, runs its retry, and still finishes 3 trials."""
    rdb, faulty, storage = stores
    study = new_study(storage)
    retry = Heartbeat(1, GRACE_S, 3).retry_callback()

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 1:  # the other worker's fail_stale_trials
            rdb.set_trial_user_attr(trial._trial_id, FAIL_REASON, "no heartbeat")
            rdb.set_trial_state_values(trial._trial_id, FAIL)
            retry(study, rdb.get_trial(trial._trial_id))
            trial.set_user_attr("after", 1)  # this worker's next write
        return x

    with caplog.at_level(logging.WARNING):
        run_trials(study, objective, 3, callbacks=[], catch=(), retry=retry)
    ts = rdb.get_all_trials(study._study_id)
    assert [(t.number, t.state) for t in ts] == [
        (0, COMPLETE),
        (1, FAIL),
        (2, COMPLETE),
        (3, COMPLETE),
    ]
    assert ts[2].system_attrs["failed_trial"] == 1 and ts[2].params == ts[1].params
    assert "trial 1 was failed as stale by another worker" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_lost_trial_that_finished_its_work_is_dropped_too(stores) -> None:
    """The same when the trial makes no write after it was taken away: tell finds it FAIL."""
    rdb, faulty, storage = stores
    study = new_study(storage)
    retry = Heartbeat(1, GRACE_S, 3).retry_callback()

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 0:
            rdb.set_trial_state_values(trial._trial_id, FAIL)
            retry(study, rdb.get_trial(trial._trial_id))
        return x

    run_trials(study, objective, 2, callbacks=[], catch=(), retry=retry)
    states = [t.state for t in rdb.get_all_trials(study._study_id)]
    assert states == [FAIL, COMPLETE, COMPLETE]


def test_an_unreachable_storage_fails_and_requeues_the_trial_when_it_answers_again(
    stores, caplog
) -> None:
    """The storage stays down past the timeout during trial 1 and answers again as the worker
    gives up: trial 1 is FAIL with the reason and re-queued; StorageUnreachable ends the loop."""
    rdb, faulty, storage = stores
    study = new_study(storage)
    storage.timeout_s = 0.5
    retry = Heartbeat(1, GRACE_S, 3).retry_callback()

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 1:
            faulty.down = lambda: storage.unreachable is None  # down until the worker gives up
            trial.set_user_attr("a", 1)
        return x

    with caplog.at_level(logging.WARNING), pytest.raises(StorageUnreachable) as info:
        run_trials(study, objective, 3, callbacks=[], catch=(), retry=retry)
    assert str(info.value).startswith("storage sqlite:///study.db unreachable for 0.5 s: ")
    ts = rdb.get_all_trials(study._study_id)
    assert [(t.number, t.state) for t in ts] == [(0, COMPLETE), (1, FAIL), (2, WAITING)]
    assert ts[1].user_attrs[FAIL_REASON] == str(info.value)
    assert ts[2].params == ts[1].params and ts[2].system_attrs["failed_trial"] == 1
    assert "trial 1 marked FAIL and re-queued" in caplog.text
    assert "Traceback" not in caplog.text


def test_an_unreachable_storage_that_stays_down_leaves_the_trial_to_the_heartbeat(
    stores, caplog
) -> None:
    rdb, faulty, storage = stores
    study = new_study(storage)
    storage.timeout_s = 0.5
    retry = Heartbeat(1, GRACE_S, 3).retry_callback()

    def objective(trial: optuna.Trial) -> float:
        faulty.down = lambda: True
        trial.set_user_attr("a", 1)
        return 0.0

    with caplog.at_level(logging.WARNING), pytest.raises(StorageUnreachable):
        run_trials(study, objective, 1, callbacks=[], catch=(), retry=retry)
    assert [t.state for t in rdb.get_all_trials(study._study_id)] == [RUNNING]
    assert "trial 0: its end could not be recorded" in caplog.text  # its number, not its id


# ----------------------------------------------------------------------------- real servers


def test_sqlite_locked_beyond_the_busy_timeout_is_ridden_out_then_given_up(tmp_path) -> None:
    """A real lock on the SQLite file (another process's long write transaction): a call waits
    for it while it lasts less than storage.outage_timeout, and gives up once it lasts longer."""
    path = tmp_path / "study.db"
    rdb = open_storage(f"sqlite:///{path}", Heartbeat(1, 5, 3), Pool(sqlite_busy_s=0.2))
    storage = ResilientStorage(rdb, 2.0, f"sqlite:///{path}")
    study = new_study(storage)
    trial = study.ask()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(0.8, holder.rollback)  # longer than the busy timeout
    release.start()
    trial.set_user_attr("a", 1)  # waits out the lock
    release.join()
    assert rdb.get_trial(trial._trial_id).user_attrs == {"a": 1}

    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(
            StorageUnreachable,
            match=r"^storage sqlite:///\S+ unreachable for "
            r"2 s: database is locked$",
        ):
            trial.set_user_attr("b", 2)
    finally:
        holder.rollback()
        holder.close()
        rdb.engine.dispose()


def test_real_postgres_restarts_and_a_stop_are_ridden_out(pg_cluster, caplog) -> None:  # noqa: F811
    """A trial's writes and heartbeats go on in two threads while the server restarts twice
    (sessions terminated mid-transaction) and stops for a while: no call fails, nothing is lost.
    Then a stop longer than the timeout: one line naming the server's refusal."""
    url = pg_cluster.create_database()
    rdb = open_storage(url, Heartbeat(1, 30, 3), Pool())
    storage = ResilientStorage(rdb, 20, url)
    study = new_study(storage)
    trial = study.ask()
    errors: list[BaseException] = []
    steps: list[int] = []
    stop = threading.Event()

    def work() -> None:
        try:
            step = 0
            while not stop.is_set():
                step += 1
                trial.report(float(step), step=step)
                trial.set_user_attr("step", step)
                study.get_trials(deepcopy=False)
                steps.append(step)
        except BaseException as err:  # noqa: BLE001  (the assertion below shows it)
            errors.append(err)

    def beat() -> None:
        while not stop.wait(0.05):
            storage.record_heartbeat(trial._trial_id)

    threads = [threading.Thread(target=work), threading.Thread(target=beat)]
    with caplog.at_level(logging.WARNING):
        for t in threads:
            t.start()
        for _ in range(2):
            time.sleep(0.5)
            pg_cluster.restart()
        time.sleep(0.5)
        pg_cluster.stop()
        time.sleep(3)
        pg_cluster.start()
        n = len(steps)
        while len(steps) < n + 5 and not errors:  # the work goes on after the outage
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert "unreachable" in caplog.text and "is back after" in caplog.text
    stored = rdb.get_trial(trial._trial_id)
    last = stored.user_attrs["step"]
    assert last >= steps[-1] and sorted(stored.intermediate_values) == list(range(1, last + 1))
    assert stored.state == RUNNING

    storage.timeout_s = 1.0
    pg_cluster.stop()
    try:
        with pytest.raises(StorageUnreachable) as info:
            trial.set_user_attr("late", 1)
        assert str(info.value).startswith(
            f"storage {url} unreachable for 1 s: connection to server at"
        )
        assert "Connection refused" in str(info.value)
    finally:
        pg_cluster.start()
        rdb.engine.dispose()


def test_a_worker_past_the_timeout_exits_3_in_one_line_and_the_next_worker_retries(
    pg_cluster,  # noqa: F811
    tmp_path,
) -> None:
    """The server stops for longer than storage.outage_timeout during FT: the worker ends with
    one line and exit code 3, no traceback. Its trial stays RUNNING (the storage could not be
    told); once the server is back, the next worker fails it as stale and resumes it."""
    url = pg_cluster.create_database()
    args = [
        "progress=false",
        "device=cpu",
        "study.sampler=random",
        "data.train_per_class=200",
        "data.val_per_class=20",
        "data.test_per_class=20",
        "data.synthetic.source_per_class=100",
        "data.synthetic.source_epochs=3",
        "ft.epochs=30",
        "ft.batch_size=8",
        "search_space={hp.epochs:{type:int,low:1,high:2}}",
        "storage=postgres",
        "study.name=gone",
        "storage.outage_timeout=3",
        "storage.heartbeat_interval=1",
        "storage.grace_period=3",
        f"storage.artifacts={tmp_path / 'artifacts'}",
    ]
    env = {
        **os.environ,
        "HPSEARCH_STORAGE_URL": url,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }

    def worker(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "hpsearch", *args, "study.n_trials=1"],
            cwd=tmp_path,
            env=env,
            stdout=open(tmp_path / f"{name}.out", "w"),
            stderr=open(tmp_path / f"{name}.err", "w"),
        )

    def trials() -> list[optuna.trial.FrozenTrial]:
        storage = optuna.storages.RDBStorage(url)
        try:
            return optuna.load_study(study_name="gone", storage=storage).get_trials()
        finally:
            storage.engine.dispose()

    def in_ft() -> bool:
        try:
            ts = trials()
        except Exception:  # no study yet
            return False
        return any(
            t.state == RUNNING
            and t.system_attrs.get("hpsearch:checkpoint", {}).get("ft_epoch", 0) >= 1
            for t in ts
        )

    first = worker("first")
    try:
        deadline = time.monotonic() + 240
        while not in_ft():
            assert first.poll() is None and time.monotonic() < deadline, (
                tmp_path / "first.err"
            ).read_text()[-3000:]
            time.sleep(0.2)
        pg_cluster.stop()
        code = first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
        pg_cluster.start()
    err = (tmp_path / "first.err").read_text()
    out = (tmp_path / "first.out").read_text()
    assert code == 3, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"hpsearch: error: storage {re.escape(url)} unreachable for 3 s: "
        r"connection to server at .*Connection refused",
        last,
    ), last
    assert "Traceback" not in err + out
    victim = [t for t in trials() if t.state == RUNNING]
    assert len(victim) == 1  # the storage could not be told; the heartbeat is stale now

    time.sleep(3 + 1)  # the grace period
    second = worker("second")
    assert second.wait(timeout=240) == 0, (tmp_path / "second.err").read_text()[-3000:]
    ts = trials()
    failed = ts[victim[0].number]
    assert failed.state == FAIL and failed.user_attrs[FAIL_REASON].startswith("no heartbeat")
    retry = [t for t in ts if t.system_attrs.get("failed_trial") == failed.number]
    assert len(retry) == 1 and retry[0].state == COMPLETE
    assert retry[0].user_attrs["resumed_from_trial"] == failed.number
    assert retry[0].user_attrs["ft_resumed_from_epoch"] >= 1
