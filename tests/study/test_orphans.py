"""Workers die with their launcher: ``kill -9`` of the launcher (no chance to forward anything)
and a hang-up stop every worker the graceful way: its trial FAIL and re-queued, none RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from conftest import REPO

ARGS = [
    "progress=false",
    "device=cpu",
    "study.sampler=random",
    "data.train_per_class=200",
    "data.val_per_class=10",
    "data.test_per_class=10",
    "data.synthetic.source_per_class=50",
    "data.synthetic.source_epochs=2",
    "hp.epochs=1",
    "search_space={hp.lr:{type:float,low:0.01,high:0.1,log:true}}",
    "ft.epochs=100",
    "ft.batch_size=8",  # 125 steps an epoch: the trials run for minutes unless stopped
    "study.n_trials=1",
    "workers=2",
]


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def states(url: str) -> list[optuna.trial.FrozenTrial]:
    if not Path(url.removeprefix("sqlite:///")).exists():
        return []
    try:
        return optuna.load_study(study_name="toy", storage=url).get_trials(deepcopy=False)
    except KeyError:  # the study is not created yet
        return []
    except sqlalchemy.exc.IntegrityError:  # this reader raced the launcher creating the tables
        return []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["kill-9", "hangup"])
def test_workers_stop_with_their_launcher(tmp_path: Path, sig: signal.Signals) -> None:
    url = f"sqlite:///{tmp_path}/storage/hpsearch.db"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    out = open(tmp_path / "launcher.log", "w")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", *ARGS, f"storage.url={url}"],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while sum(t.state.name == "RUNNING" for t in states(url)) < 2:
            assert launcher.poll() is None, (tmp_path / "launcher.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the two workers never ran their trials"
            time.sleep(1)
        time.sleep(2)  # into FT
        workers = children(launcher.pid)
        assert len(workers) == 2
        os.kill(launcher.pid, sig)
        deadline = time.monotonic() + 90
        while any(alive(w) for w in workers):
            assert time.monotonic() < deadline, "workers outlived their launcher"
            time.sleep(0.5)
    finally:
        for pid in [launcher.pid, *workers]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        launcher.wait(timeout=30)
    ts = states(url)
    assert not [t for t in ts if t.state.name == "RUNNING"], [t.state for t in ts]
    failed = [t for t in ts if t.state.name == "FAIL"]
    assert len(failed) == 2
    assert all(t.user_attrs["fail_reason"].startswith("stopped by SIGTERM") for t in failed)
    retries = [t for t in ts if t.state.name == "WAITING"]
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == sorted(
        t.number for t in failed
    )
