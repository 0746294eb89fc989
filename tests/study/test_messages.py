"""Item 9 of issue 21: a trial whose end could not be recorded is named by its number, and
Optuna's SQL dumps during an outage are one line."""

from __future__ import annotations

import logging
import sqlite3

import optuna
import pytest
from sqlalchemy import exc

from hpsearch.study.loop import _abandon
from hpsearch.study.outage import OPTUNA_RDB_LOGGER, ResilientStorage


@pytest.fixture
def study(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    storage = ResilientStorage(optuna.storages.RDBStorage(url), 1.0, url)
    study = optuna.create_study(storage=storage, study_name="s")
    for _ in range(6):  # trial ids and numbers differ: ids start at 1
        study.enqueue_trial({})
    yield study
    storage.rdb.engine.dispose()


def test_abandoned_trial_is_named_by_its_number(study, caplog, monkeypatch):
    trial = study.ask()  # number 0, database id 1
    lost = exc.OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked"))

    def unreachable(*_a, **_k):
        raise lost

    monkeypatch.setattr(study._storage.backend, "get_trial", unreachable)
    with caplog.at_level(logging.WARNING):
        _abandon(study, trial._trial_id, False, "gone", lambda s, t: None, trial.number)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"trial {trial.number}: its end could not be recorded")
    assert "if it is still RUNNING" in message and trial._trial_id != trial.number


def test_optuna_sql_dump_is_one_line(study):
    dump = (
        "Caught an error from sqlalchemy: (psycopg2.OperationalError) server closed the "
        "connection unexpectedly\n\tThis probably means the server terminated abnormally\n"
        "[SQL: SELECT trials.trial_id FROM trials WHERE ...]\n[parameters: {...}]\n"
        "(Background on this error at: https://sqlalche.me/e/20/e3q8). Falling back to a "
        "slower alternative."
    )
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(OPTUNA_RDB_LOGGER)  # optuna's loggers do not propagate
    level, logger.level = logger.level, logging.WARNING  # whatever verbosity an earlier test set
    logger.addHandler(handler)
    try:
        logger.warning(dump)
    finally:
        logger.removeHandler(handler)
        logger.level = level
    (message,) = [r.getMessage() for r in records]
    assert "\n" not in message and "server closed the connection unexpectedly" in message
    assert "[SQL:" not in message
