"""A storage that cannot work is one line at once; a locked one is waited for once, not nested
(issue 21, items 6 and 7); a message that lists studies stays short."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import time
from pathlib import Path

import optuna
import pytest

from hpsearch.app import compose_config
from hpsearch.errors import HpsearchError, StorageUnreachable
from hpsearch.study.setup import prepare_study
from hpsearch.study.storage import check_connection, load_existing_study


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=False)
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs needs root and CAP_SYS_ADMIN")


def test_a_directory_as_sqlite_database_is_a_bad_url_at_once(tmp_path):
    start = time.monotonic()
    with pytest.raises(HpsearchError, match=r"is a directory; name a database file in it"):
        check_connection(f"sqlite:///{tmp_path}")
    assert time.monotonic() - start < 1  # not waited out as an outage (126 s before)


def test_a_read_only_storage_directory_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    mount_tmpfs(ro, "ro,size=1m")
    try:
        with pytest.raises(HpsearchError, match=r"the directory .*/ro is not writable"):
            check_connection(f"sqlite:///{ro}/hpsearch.db")
        with pytest.raises(HpsearchError, match=r"cannot create the directory .*/ro/sub"):
            check_connection(f"sqlite:///{ro}/sub/hpsearch.db")
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_a_locked_database_at_start_is_waited_for_once(tmp_path, caplog):
    """Another process holds the write lock: setup waits storage.outage_timeout (counted from
    the start of the call that waited for the lock), says so once, then exit code 3 (before:
    nested retries, about 4x the timeout, the message repeated)."""
    url = f"sqlite:///{tmp_path}/hpsearch.db"
    cfg = compose_config([f"storage.url={url}", "storage.outage_timeout=2"])
    prepare_study(cfg, [])
    holder = sqlite3.connect(tmp_path / "hpsearch.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        with caplog.at_level(logging.WARNING), pytest.raises(StorageUnreachable) as err:
            prepare_study(cfg, [])
        elapsed = time.monotonic() - start
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert 2 <= elapsed < 2 * 2 + 1.5, elapsed
    assert str(err.value).count("unreachable") == 1, err.value
    waits = [r for r in caplog.records if "retrying for up to" in r.getMessage()]
    assert len(waits) == 1, [r.getMessage() for r in waits]


def test_a_list_of_studies_is_cut_short(tmp_path):
    url = f"sqlite:///{tmp_path}/many.db"
    storage = optuna.storages.RDBStorage(url)
    for i in range(30):
        optuna.create_study(storage=storage, study_name=f"s{i:02d}-" + "z" * 100)
    storage.engine.dispose()
    with pytest.raises(HpsearchError) as err:
        load_existing_study(url, "nope")
    text = str(err.value)
    assert text.endswith("... and 20 more") and "z" * 60 not in text and len(text) < 700, text
