"""A full disk (a small tmpfs, filled): the study's database and the caches (issue 21, item 5).

Database: the worker stops with one line and exit code 4, leaves no traceback; once space is
back, the same command fails the interrupted trial (if it could not be failed then), re-queues it
and resumes it from its checkpoint, and no trial stays RUNNING. Cache: the run goes on without
the cache, and no temporary file is left.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from conftest import run_cli

TINY = [
    "progress=false",
    "device=cpu",
    "study.sampler=random",
    "data.train_per_class=40",
    "data.val_per_class=10",
    "data.test_per_class=10",
    "data.synthetic.source_per_class=50",
    "data.synthetic.source_epochs=2",
    "hp.epochs=1",
    "search_space={hp.lr:{type:float,low:0.01,high:0.1,log:true}}",
    "ft.epochs=6",
    "storage.heartbeat_interval=1",
    "storage.grace_period=2",
]


# Free space left on the database's disk: the first trial's writes (about 400 KiB of SQLite's
# write-ahead log) do not fit, so the disk fills in the middle of it.
LEAVE_BYTES = 256 * 1024


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MiB tmpfs, unmounted afterwards; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs needs root and CAP_SYS_ADMIN")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path, leave_bytes: int) -> Path:
    """A file that takes all but ``leave_bytes`` of the disk's free space."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    size = st.f_bavail * st.f_frsize - leave_bytes
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, size))
    return filler


def one_error(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpsearch: error")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


@pytest.mark.slow  # three worker runs: about two minutes
def test_full_database_disk_exits_4_and_the_rerun_resumes(small_disk: Path, workdir: Path):
    url = f"sqlite:///{small_disk}/hpsearch.db"
    args = [*TINY, f"storage.url={url}"]
    ready = run_cli([*args, "study.n_trials=0"], workdir)
    assert ready.returncode == 0, ready.stderr[-2000:]
    filler = fill(small_disk, leave_bytes=LEAVE_BYTES)  # the trials' writes fill the rest

    full = run_cli([*args, "study.n_trials=20"], workdir)
    assert full.returncode == 4, full.stderr[-3000:]
    line = one_error(full)
    assert "its disk is full" in line and "run the same command again" in line, line

    filler.unlink()  # space is back
    time.sleep(3)  # past storage.grace_period: the interrupted trial's heartbeat is stale
    again = run_cli([*args, "study.n_trials=1"], workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna.load_study(study_name="toy", storage=url).get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states, states
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert failed, f"the disk filled between trials ({states}): leave less room"
    for trial in failed:  # each interrupted trial was retried, from its checkpoint if any
        retry = next(
            t for t in trials if t.system_attrs.get("retry_history", [])[-1:] == [trial.number]
        )
        assert retry.state.name == "COMPLETE" and retry.params == trial.params
        pointer = trial.system_attrs.get("hpsearch:checkpoint")
        if pointer is not None:
            assert retry.user_attrs["resumed_from_checkpoint"] == pointer["phase"]


def test_full_cache_disk_goes_on_without_the_cache(small_disk: Path, workdir: Path):
    fill(small_disk, leave_bytes=8 * 1024)
    proc = run_cli([*TINY, f"storage.cache_dir={small_disk}/cache", "study.n_trials=1"], workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not written (No space left on device" in proc.stderr + proc.stdout
    assert not list(small_disk.rglob("*.tmp"))  # nothing half-written is left
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{workdir}/storage/hpsearch.db")
    assert [t.state.name for t in study.get_trials(deepcopy=False)] == ["COMPLETE"]


def test_full_log_disk_keeps_the_worker_output_flowing(small_disk: Path):
    """A worker's log on a full disk: one line says so, every line still reaches the terminal,
    and the worker is never blocked on its pipe (before: the launcher's output thread died)."""
    import io
    import sys
    import threading

    from hpsearch.study.launcher import _Worker

    fill(small_disk, leave_bytes=4096)
    lines = 2000  # about 200 KB: far more than the disk holds
    code = f"for i in range({lines}): print('line', i, 'x' * 90)"
    out = io.StringIO()
    worker = _Worker(
        0,
        [sys.executable, "-c", code],
        dict(os.environ),
        small_disk / "worker-0.log",
        out,
        threading.Lock(),
    )
    assert worker.proc.wait(timeout=60) == 0  # not blocked on a full pipe
    assert worker.wait() == 0
    text = out.getvalue()
    lost = [line for line in text.splitlines() if "not written from here on" in line]
    assert len(lost) == 1 and "No space left on device" in lost[0], lost
    assert text.count("[worker 0] line ") == lines
