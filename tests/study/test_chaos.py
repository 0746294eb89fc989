"""Chaos: workers on a PostgreSQL server that restarts and goes away while they run.

Three workers (``workers=3``, 20 trials each) on a private server (``pgcluster``), restarted
three times and stopped for 20 s at random moments (seeded: ``HPSEARCH_CHAOS_SEED``) of the
study. Every worker must finish with exit code 0, and the study must hold exactly 60 COMPLETE
trials, none RUNNING or WAITING, every FAIL with its reason and a retry, and no work done twice
beyond retried trials. Workers are real ``python -m hpsearch`` processes on a tiny toy task.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from pgcluster import PgCluster, pg_cluster  # noqa: F401  (fixture)

from hpsearch.record import FAIL_REASON

pytestmark = pytest.mark.slow  # a private PostgreSQL restarted under running workers

SEED = int(os.environ.get("HPSEARCH_CHAOS_SEED", "10"))
N_WORKERS, PER_WORKER = 3, 20
STOP_S = 20
DEVICE = os.environ.get("HPSEARCH_TEST_DEVICE", "cpu")
# A trial of ~1 s: a report, a checkpoint and its pointer per FT epoch, so that an outage often
# cuts a write in the middle.
TOY = [
    "progress=false",
    f"device={DEVICE}",
    "study.sampler=random",
    "data.train_per_class=40",
    "data.val_per_class=20",
    "data.test_per_class=20",
    "data.synthetic.source_per_class=100",
    "data.synthetic.source_epochs=3",
    "ft.epochs=5",
    "search_space={hp.epochs:{type:int,low:1,high:2}}",
]
# A grace period shorter than the stop: workers must not fail each other's trials after it.
HEARTBEAT = ["storage.heartbeat_interval=2", "storage.grace_period=10"]
TIMEOUT_S = 900
COMPLETE, FAIL, RUNNING, WAITING = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.FAIL,
    optuna.trial.TrialState.RUNNING,
    optuna.trial.TrialState.WAITING,
)


def completed(engine) -> int:
    """COMPLETE trials so far (0 while the server is down or the tables do not exist yet)."""
    from sqlalchemy import text

    try:
        with engine.connect() as conn:
            return int(
                conn.execute(text("SELECT count(*) FROM trials WHERE state = 'COMPLETE'")).scalar()
            )
    except Exception:
        return 0


def wait_until(condition, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(
                f"the workers exited ({proc.returncode}) while waiting for "
                f"{what}:\n{log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_workers_ride_out_three_restarts_and_a_20s_stop(
    pg_cluster: PgCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    url = pg_cluster.create_database()
    rng = random.Random(SEED)
    events = ["restart"] * 3 + ["stop"]
    rng.shuffle(events)
    # Each event once this many trials are COMPLETE (all three workers still busy), then at a
    # random moment of the trials running then.
    marks = sorted(rng.sample(range(6, 45), len(events)))
    delays = [rng.uniform(0.0, 1.5) for _ in events]

    log = tmp_path / "launcher.log"
    env = {**os.environ, "HPSEARCH_STORAGE_URL": url, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpsearch",
            *TOY,
            *HEARTBEAT,
            "storage=postgres",
            f"workers={N_WORKERS}",
            f"study.n_trials={PER_WORKER}",
            "study.name=chaos",
        ],
        cwd=tmp_path,
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    engine = create_engine(url, poolclass=NullPool)
    try:
        # All three workers past their start-up (which checks the storage once, as input).
        wait_until(
            lambda: (
                len(set(re.findall(r"^\[worker (\d)\] .*\] - trial \d+: ", log.read_text(), re.M)))
                == N_WORKERS
            ),
            "a finished trial from every worker",
            proc,
            log,
        )
        for event, mark, delay in zip(events, marks, delays):
            wait_until(
                lambda mark=mark: completed(engine) >= mark, f"{mark} complete trials", proc, log
            )
            time.sleep(delay)
            if event == "restart":
                pg_cluster.restart()
            else:
                pg_cluster.stop()
                time.sleep(STOP_S)
                pg_cluster.start()
        code = proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        engine.dispose()
    out = log.read_text()
    assert code == 0, out[-5000:]
    for i in range(N_WORKERS):
        assert f"worker {i} exited with code 0" in out, out[-5000:]
    assert "Traceback" not in out
    assert "is back after" in out  # the outages reached the workers

    storage = optuna.storages.RDBStorage(url)
    try:
        ts = optuna.load_study(study_name="chaos", storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()
    complete = [t for t in ts if t.state == COMPLETE]
    failed = [t for t in ts if t.state == FAIL]
    assert len(complete) == N_WORKERS * PER_WORKER
    assert not [t.number for t in ts if t.state in (RUNNING, WAITING)]
    for t in failed:  # each failure says why, and was retried
        assert t.user_attrs.get(FAIL_REASON), t.number
        assert any(t.number in r.system_attrs.get("retry_history", []) for r in ts), t.number
    # No work done twice: the COMPLETE trials are as many distinct parameter sets (a retry has
    # its failed trial's parameters, and only one of the two completes).
    assert len({tuple(sorted(t.params.items())) for t in complete}) == len(complete)
    backs = re.findall(r"is back after ([\d.]+) s", out)
    print(
        f"\nchaos seed {SEED}: events {list(zip(events, marks))}; {len(ts)} trials, "
        f"{len(failed)} failed and retried; outages seen by workers (s): {backs}"
    )
