"""Many workers on one study: PostgreSQL and SQLite, crashes, stops, resume, compose wiring.

Every PostgreSQL test gets a fresh database on the local server (127.0.0.1:5432; ``.ci/run``
starts it) and drops it afterwards. Workers are real ``python -m hpsearch`` processes on a tiny
toy task; the crash tests make FT long by config (more epochs, smaller batches), never by sleeps.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from conftest import REPO, run_cli
from pgcluster import PgCluster

pytestmark = pytest.mark.slow  # workers as subprocesses, PostgreSQL databases, resume runs

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN_URL = f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/postgres"
# A toy task small enough that a worker's time is mostly its start-up (importing torch).
DEVICE = os.environ.get("HPSEARCH_TEST_DEVICE", "cpu")  # cuda: the same tests on a GPU machine
TINY = [
    "progress=false",
    f"device={DEVICE}",
    "study.sampler=random",
    "data.train_per_class=40",
    "data.val_per_class=20",
    "data.test_per_class=20",
    "data.synthetic.source_per_class=100",
    "data.synthetic.source_epochs=3",
    "ft.epochs=3",
]
SHORT_HP = "hp.epochs:{type:int,low:1,high:2}"  # search space entry: 1-2 HP epochs, not 0-32
TINY_SPACE = [f"search_space={{{SHORT_HP}}}"]
# Trials whose FT is long enough (30 epochs x 125 steps) to stop a worker in the middle of it,
# after a first trial that is quick (4 steps per epoch): FT batch size is searched, and fixed.
FT_EPOCHS = 30
SLOW_FT = [
    f"ft.epochs={FT_EPOCHS}",
    "data.train_per_class=200",
    f"++search_space={{{SHORT_HP},ft.batch_size:{{type:categorical,choices:[8,256]}}}}",
    "study.enqueue=[{ft.batch_size:256},{ft.batch_size:8}]",
]
FAST_HEARTBEAT = ["storage.heartbeat_interval=1", "storage.grace_period=3"]
WORKER_TIMEOUT_S = 240
COMPLETE, FAIL, RUNNING, WAITING = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.FAIL,
    optuna.trial.TrialState.RUNNING,
    optuna.trial.TrialState.WAITING,
)


# ----------------------------------------------------------------------------- fixtures, helpers


def _admin_engine():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture
def pg_url() -> str:
    """The URL of a fresh, uniquely named database, dropped after the test."""
    from sqlalchemy import text

    name = f"hpsearch_test_{uuid.uuid4().hex[:12]}"
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as err:
        pytest.fail(f"PostgreSQL on {PG_HOST}:{PG_PORT} is needed (.ci/run starts it): {err}")
    try:
        yield f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def start_worker(
    args: list[str], cwd: Path, log_name: str, env: dict | None = None
) -> subprocess.Popen:
    """``python -m hpsearch ARGS`` in the background; its output goes to cwd/<log_name>."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    log = open(cwd / log_name, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "hpsearch", *args],
        cwd=cwd,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ok(procs: list[subprocess.Popen], cwd: Path, logs: list[str]) -> None:
    for proc, name in zip(procs, logs):
        code = proc.wait(timeout=WORKER_TIMEOUT_S)
        assert code == 0, f"{name} exited {code}:\n{(cwd / name).read_text()[-3000:]}"


def trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, procs: list[subprocess.Popen] = ()
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # the study or its tables may not exist yet
            value = None
        if value:
            return value
        if any(p.poll() is not None for p in procs):
            raise AssertionError(f"a worker exited while waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def running_in_ft(
    url: str, study: str, min_epoch: int, min_complete: int = 0
) -> optuna.trial.FrozenTrial | None:
    """A RUNNING trial with a checkpoint after >= min_epoch FT epochs (and FT not finished),
    once min_complete trials are done."""
    ts = trials(url, study)
    if sum(t.state == COMPLETE for t in ts) < min_complete:
        return None
    for t in ts:
        pointer = t.system_attrs.get("hpsearch:checkpoint") or {}
        if t.state == RUNNING and min_epoch <= pointer.get("ft_epoch", 0) < FT_EPOCHS - 1:
            return t
    return None


def snapshot(t: optuna.trial.FrozenTrial) -> tuple:
    return (
        t.number,
        t.state,
        t.values,
        t.params,
        t.user_attrs,
        t.intermediate_values,
        t.datetime_complete,
    )


# ----------------------------------------------------------------------------- PostgreSQL


def test_three_workers_share_one_study(pg_url: str, tmp_path: Path) -> None:
    """Three workers start at once on a fresh database (race-free setup), n_trials 5+4+3, two
    fixed trials: exactly 12 finished trials, none duplicated, none left running."""
    args = (
        TINY
        + TINY_SPACE
        + ["storage=postgres", "study.name=three", "study.enqueue=[{hp.lr:0.0123},{hp.lr:0.0456}]"]
    )
    env = {"HPSEARCH_STORAGE_URL": pg_url}
    logs = [f"w{i}.log" for i in range(3)]
    procs = [
        start_worker(args + [f"study.n_trials={n}"], tmp_path, log, env)
        for n, log in zip((5, 4, 3), logs)
    ]
    wait_ok(procs, tmp_path, logs)

    ts = trials(pg_url, "three")
    assert len(ts) == 12 and sorted(t.number for t in ts) == list(range(12))
    assert all(t.state == COMPLETE for t in ts), [t.state for t in ts]
    # Each fixed trial ran once although every worker enqueued both.
    assert sorted(t.params["hp.lr"] for t in ts if t.params["hp.lr"] in (0.0123, 0.0456)) == [
        0.0123,
        0.0456,
    ]
    # Workers sample with different seeds: no two trials have the same parameters.
    assert len({tuple(sorted(t.params.items())) for t in ts}) == 12
    config = optuna.load_study(study_name="three", storage=pg_url).user_attrs["config"]
    assert config["storage"]["url"] == pg_url  # no password in this URL; the key is kept


def test_killed_worker_trial_is_retried_and_resumes(pg_url: str, tmp_path: Path) -> None:
    """kill -9 in the middle of FT: after the grace period the next worker marks the trial FAIL
    and its retry resumes from the newest checkpoint, running fewer FT epochs than ft.epochs."""
    args = (
        TINY
        + SLOW_FT
        + FAST_HEARTBEAT
        + ["storage=postgres", "study.name=kill", f"storage.artifacts={tmp_path / 'artifacts'}"]
    )
    env = {"HPSEARCH_STORAGE_URL": pg_url}
    first = start_worker(args + ["study.n_trials=2"], tmp_path, "first.log", env)
    try:
        # Late in FT, so that the retry has little left to do (and the test is quick).
        victim = wait_for(
            lambda: running_in_ft(pg_url, "kill", FT_EPOCHS // 2, 1),
            180,
            "a trial in FT after one complete trial",
            [first],
        )
    finally:
        first.kill()  # SIGKILL: no handler runs, the trial stays RUNNING
        first.wait()
    before = {t.number: snapshot(t) for t in trials(pg_url, "kill") if t.state == COMPLETE}
    assert trials(pg_url, "kill")[victim.number].state == RUNNING

    time.sleep(3 + 1)  # the grace period: the victim's heartbeat is now stale
    second = start_worker(args + ["study.n_trials=1"], tmp_path, "second.log", env)
    wait_ok([second], tmp_path, ["second.log"])

    ts = trials(pg_url, "kill")
    by_number = {t.number: t for t in ts}
    assert by_number[victim.number].state == FAIL
    retries = [t for t in ts if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == COMPLETE
    retry = retries[0]
    assert retry.params == victim.params
    attrs = retry.user_attrs
    resumed_from = attrs["ft_resumed_from_epoch"]
    assert attrs["resumed_from_trial"] == victim.number
    assert resumed_from >= 1 and attrs["resumed_from_checkpoint"] == f"ft_epoch_{resumed_from}"
    assert attrs["ft_epochs_run"] == FT_EPOCHS - resumed_from < FT_EPOCHS
    assert len(attrs["ft_val_acc_curve"]) == FT_EPOCHS
    assert len(retry.intermediate_values) == FT_EPOCHS
    assert retry.value == attrs["ft_val_acc_curve"][-1]
    # The trials that had completed before the kill are untouched.
    assert {n: snapshot(by_number[n]) for n in before} == before
    assert not [t for t in ts if t.state == RUNNING]
    # Finished trials keep no checkpoint; the retry removed the one it resumed from.
    assert not list((tmp_path / "artifacts").iterdir())


def test_sigterm_fails_and_requeues_the_running_trial(pg_url: str, tmp_path: Path) -> None:
    """SIGTERM in the middle of FT: the worker exits (without finishing FT: the wait is bounded),
    its trial is FAIL (not RUNNING) and re-queued with a pointer to its last checkpoint."""
    args = (
        TINY
        + SLOW_FT
        + [
            "storage=postgres",
            "study.name=term",
            "study.n_trials=2",
            f"storage.artifacts={tmp_path / 'artifacts'}",
        ]
    )
    worker = start_worker(args, tmp_path, "worker.log", {"HPSEARCH_STORAGE_URL": pg_url})
    try:
        # the slow second trial (batch size 8): the quick first one could end before the signal
        victim = wait_for(
            lambda: running_in_ft(pg_url, "term", 1, 1), 180, "the slow trial in FT", [worker]
        )
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
    finally:
        worker.kill()
    log = (tmp_path / "worker.log").read_text()
    assert code == 128 + signal.SIGTERM, log[-3000:]
    ts = trials(pg_url, "term")
    assert ts[victim.number].state == FAIL
    assert ts[victim.number].user_attrs["fail_reason"].startswith("stopped by SIGTERM")
    assert not [t for t in ts if t.state == RUNNING]
    retries = [t for t in ts if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == WAITING
    assert retries[0].params == victim.params
    pointer = retries[0].system_attrs["hpsearch:checkpoint"]
    assert pointer["ft_epoch"] >= victim.system_attrs["hpsearch:checkpoint"]["ft_epoch"]
    assert (tmp_path / "artifacts" / pointer["artifact_id"]).is_file()
    assert f"trial {victim.number} marked FAIL and re-queued" in log


# ----------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def password_server() -> tuple[int, str]:
    """A private PostgreSQL (initdb, scram-sha-256 auth) for the wrong-password case: the shared
    local server trusts every local connection, so it accepts any password."""
    password = "Pw-" + uuid.uuid4().hex[:8]
    cluster = PgCluster(user="hps", password=password)
    cluster.start()
    try:
        yield cluster.port, password
    finally:
        cluster.remove()


def test_bad_storage_is_one_line_and_exit_2(
    password_server: tuple[int, str], tmp_path: Path
) -> None:
    port, password = password_server
    secret = "Sekr3t-" + uuid.uuid4().hex[:6]
    cases = {
        "unreachable": (
            f"postgresql+psycopg2://postgres:{secret}@{PG_HOST}:1/db",
            "cannot open storage: no database server reachable at 127.0.0.1:1",
        ),
        "wrong password": (
            f"postgresql+psycopg2://hps:{secret}@{PG_HOST}:{port}/postgres",
            "cannot open storage: authentication failed for user 'hps'",
        ),
        "unknown database": (
            f"postgresql+psycopg2://postgres:{secret}@{PG_HOST}:{PG_PORT}/"
            f"no_such_db_{uuid.uuid4().hex[:6]}",
            "does not exist",
        ),
    }
    procs = {
        name: start_worker(
            TINY + TINY_SPACE + ["storage=postgres"],
            tmp_path,
            f"{i}.log",
            {"HPSEARCH_STORAGE_URL": url},
        )
        for i, (name, (url, _)) in enumerate(cases.items())
    }
    for i, (name, (_url, expected)) in enumerate(cases.items()):
        assert procs[name].wait(timeout=WORKER_TIMEOUT_S) == 2, name
        out = (tmp_path / f"{i}.log").read_text().strip()
        assert out.count("\n") == 0 and out.startswith("hpsearch: error: storage.url="), out
        assert expected in out, (name, out)
        assert secret not in out and ":***@" in out, out
        assert not (tmp_path / "storage" / "artifacts").exists()  # nothing written
    # The right password on the same server passes the check (the case above is really auth).
    from hpsearch.study.storage import check_connection

    check_connection(f"postgresql+psycopg2://hps:{password}@{PG_HOST}:{port}/postgres")


def test_postgres_url_must_be_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpsearch.app import compose_config
    from hpsearch.errors import ConfigError

    monkeypatch.delenv("HPSEARCH_STORAGE_URL", raising=False)
    with pytest.raises(ConfigError, match=r"^storage.url=None is invalid: .*HPSEARCH_STORAGE_URL"):
        compose_config(["storage=postgres"])
    monkeypatch.setenv("HPSEARCH_STORAGE_URL", "postgresql+psycopg2://u:pw@db.example:5432/s")
    from hpsearch.study.storage import safe_url

    cfg_url = "postgresql+psycopg2://u:pw@db.example:5432/s"
    assert safe_url(cfg_url) == "postgresql+psycopg2://u:***@db.example:5432/s"


def test_launcher_options_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpsearch.app import compose_config
    from hpsearch.errors import ConfigError
    from hpsearch.study.launcher import worker_args, worker_env

    with pytest.raises(ConfigError, match=r"^workers=0 is invalid: must be >= 1"):
        compose_config(["workers=0"])
    with pytest.raises(ConfigError, match=r"^device='cuda:1' is invalid: must be auto or cuda"):
        compose_config(["workers=2", "devices=[0,1]", "device=cuda:1"])
    cfg = compose_config(["workers=3", "devices=[2,5]", "workers_per_device=2"])
    assert [worker_env(cfg, i, {})["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["2", "5", "2"]
    assert worker_args(["workers=3", "devices=[2,5]", "+workers=2", "study.n_trials=4"]) == [
        "study.n_trials=4"
    ]


# ----------------------------------------------------------------------------- compose, SQLite

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.gpu.yml")  # CPU default, GPU overlay


def env_example() -> dict[str, str]:
    """The settings of .env.example."""
    values = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, values: dict[str, str]) -> str:
    """``text`` with ${VAR}, ${VAR:-default} and ${VAR:?error} replaced as docker compose does."""

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        var, op, arg = m.group(1), m.group(2), m.group(3)
        value = values.get(var, "")
        if op == ":?" and not value:
            raise AssertionError(f"{var} must be set: {arg}")
        return value if value or op is None else (arg if op == ":-" else "")

    return re.sub(r"\$\$|\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, text)


def compose_file(name: str) -> dict:
    import yaml

    return yaml.safe_load((REPO / name).read_text())


def compose_service(name: str) -> tuple[list[str], dict[str, str]]:
    """A service's command and environment from docker-compose.yml, interpolated the way
    ``docker compose`` does with the values of .env.example."""
    service = compose_file("docker-compose.yml")["services"][name]
    values = env_example()
    command = shlex.split(interpolate(service["command"], values))
    env = {k: interpolate(str(v), values) for k, v in service.get("environment", {}).items()}
    return command, env


def test_compose_runs_on_cpus_and_the_gpu_overlay_adds_devices() -> None:
    """docker-compose.yml reserves no GPU (the default runs on any machine), publishes its ports
    on 127.0.0.1 only and has no top-level ``name`` (compose v1 rejects it);
    docker-compose.gpu.yml gives the workers the NVIDIA devices and the settings that
    hpsearch.study.placement reads to claim a GPU slot per worker."""
    from hpsearch.study import placement

    base, gpu = (compose_file(name) for name in COMPOSE_FILES)
    assert {key for key in base if not key.startswith("x-")} == {"services", "volumes"}
    assert set(base["services"]) == {"postgres", "init", "worker", "dashboard"}
    for name, service in base["services"].items():
        assert not {"deploy", "runtime", "devices", "gpus"} & set(service), name
        assert all(port.startswith("127.0.0.1:") for port in service.get("ports", [])), name
    assert base["services"]["dashboard"]["ports"] and base["services"]["postgres"]["ports"]

    assert list(gpu["services"]) == ["worker"]  # the overlay changes the workers only
    worker = gpu["services"]["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    values = env_example()
    env = {key: interpolate(str(value), values) for key, value in worker["environment"].items()}
    assert env == {placement.GPU_LOCK_DIR_ENV: "/gpulocks", placement.WORKERS_PER_DEVICE_ENV: "1"}
    assert worker["volumes"] == ["gpulocks:/gpulocks"] and "gpulocks" in gpu["volumes"]


def test_env_example_sets_what_the_compose_files_read() -> None:
    """.env.example sets every ${VAR} that the two compose files read (the GPU overlay's too),
    the project name that compose v1 and v2 take from it, and nothing else."""
    text = "".join((REPO / name).read_text() for name in COMPOSE_FILES)
    read = set(re.findall(r"(?<!\$)\$\{(\w+)", text))  # $${VAR}: the container's shell's
    assert read >= {
        "POSTGRES_PASSWORD",
        "POSTGRES_IMAGE",
        "BASE_IMAGE",
        "HPSEARCH_WORKERS_PER_DEVICE",
    }
    assert set(env_example()) == read | {"COMPOSE_PROJECT_NAME"}


def test_image_installs_the_tested_torch_and_the_package_as_a_wheel() -> None:
    """The Dockerfile pins the torch and torchvision that these tests run on, and installs the
    package itself non-editable (its wheel carries conf/; no source tree in the image)."""
    import torch
    import torchvision

    dockerfile = (REPO / "Dockerfile").read_text()
    pins = dict(re.findall(r"^ARG (TORCH_VERSION|TORCHVISION_VERSION)=(\S+)$", dockerfile, re.M))
    assert pins == {
        "TORCH_VERSION": torch.__version__.split("+")[0],
        "TORCHVISION_VERSION": torchvision.__version__.split("+")[0],
    }
    installs = re.findall(r"pip install (.*)$", dockerfile, re.M)
    assert '"/src[postgres]"' in installs and not any("-e " in line for line in installs)


def test_compose_worker_command_runs_a_study(pg_url: str, tmp_path: Path) -> None:
    """docker-compose.yml's init and worker commands, run as local processes against the local
    PostgreSQL (the compose network's host name `postgres` mapped to 127.0.0.1)."""
    from sqlalchemy.engine import make_url

    init_cmd, env = compose_service("init")
    worker_cmd, worker_env = compose_service("worker")
    assert worker_env == env and worker_cmd[:2] == ["sh", "-c"]
    assert "storage=postgres" in worker_cmd[2] and "study.n_trials=0" in init_cmd[2]
    template = make_url(env["HPSEARCH_STORAGE_URL"])
    assert template.host == "postgres" and template.drivername == "postgresql+psycopg2"
    local = make_url(pg_url)
    env.update(
        HPSEARCH_STORAGE_URL=template.set(
            host=PG_HOST, username="postgres", database=local.database
        ).render_as_string(hide_password=False),
        # Split on spaces by the command's shell, as in .env (no quotes, no globbing).
        HPSEARCH_TRIALS_PER_WORKER="2",
        HPSEARCH_ARGS=" ".join(TINY + TINY_SPACE + ["study.name=compose"]),
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # `python` = this one
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    full_env = {**os.environ, **env}

    def run(cmd: list[str], log: str) -> subprocess.Popen:
        return subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=full_env,
            stdout=open(tmp_path / log, "w"),
            stderr=subprocess.STDOUT,
        )

    wait_ok([run(init_cmd, "init.log")], tmp_path, ["init.log"])
    assert trials(pg_url, "compose") == []  # the study exists (load_study works), no trial yet
    workers = [run(worker_cmd, f"worker{i}.log") for i in range(2)]
    wait_ok(workers, tmp_path, ["worker0.log", "worker1.log"])
    ts = trials(pg_url, "compose")
    assert len(ts) == 4 and all(t.state == COMPLETE for t in ts)


def test_four_local_workers_on_the_sqlite_default(tmp_path: Path) -> None:
    """workers=4 on the default SQLite file: 4 processes, 12 trials, none failed, logs apart."""
    result = run_cli(
        TINY + TINY_SPACE + ["workers=4", "study.n_trials=3", "study.name=local"],
        tmp_path,
        timeout=WORKER_TIMEOUT_S,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ts = trials(f"sqlite:///{tmp_path / 'storage' / 'hpsearch.db'}", "local")
    assert len(ts) == 12 and all(t.state == COMPLETE for t in ts), [t.state for t in ts]
    assert len({tuple(sorted(t.params.items())) for t in ts}) == 12
    for i in range(4):
        assert re.search(rf"^\[worker {i}\] .*trial \d+: ", result.stdout, re.M), i
    logs = sorted((tmp_path / "storage" / "logs" / "local").glob("*/worker-*.log"))
    assert [p.name for p in logs] == [f"worker-{i}.log" for i in range(4)]
    assert all("ft_val_acc=" in p.read_text() for p in logs)


# ----------------------------------------------------------------------------- resume, in-process


def test_resumed_trial_ends_exactly_like_an_uninterrupted_one(tmp_path: Path) -> None:
    """A trial stopped right after its checkpoint of FT epoch 2 and resumed by its retry ends
    with the same validation curve and accuracy as the same trial run without a stop: model,
    optimiser, scheduler and RNG all continue where they were."""
    from hpsearch.app import compose_config
    from hpsearch.plan import plan_study
    from hpsearch.study.shutdown import WorkerStopped
    from hpsearch.study.storage import Heartbeat
    from hpsearch.trial import Objective, Workspace
    from hpsearch.trial.checkpoints import CheckpointStore, TrialCheckpoints

    cfg = compose_config(
        TINY + TINY_SPACE + ["ft.epochs=5", f"storage.cache_dir={tmp_path / 'cache'}"]
    )
    distributions = plan_study(cfg)
    workspace = Workspace(cfg)
    params = {
        "hp.epochs": 2,
        "hp.label_smoothing": 0.1,
        "head.depth": 2,
        "hp.lr": 0.05,
        "ft.lr": 0.05,
    }

    class StopAfterEpoch2(CheckpointStore):
        def for_trial(self, trial: optuna.Trial) -> TrialCheckpoints:
            saved = super().for_trial(trial)
            save = saved.save

            def save_then_stop(checkpoint) -> None:
                save(checkpoint)
                if checkpoint.ft_epoch == 2:
                    raise WorkerStopped(signal.SIGTERM)

            saved.save = save_then_stop
            return saved

    def study() -> optuna.Study:
        s = optuna.create_study(direction="maximize")
        s.enqueue_trial(params)
        return s

    reference = study()
    reference.optimize(
        Objective(cfg, distributions, workspace, CheckpointStore.at(str(tmp_path / "a"))),
        n_trials=1,
    )
    stopped = study()
    with pytest.raises(WorkerStopped):
        stopped.optimize(
            Objective(cfg, distributions, workspace, StopAfterEpoch2.at(str(tmp_path / "b"))),
            n_trials=1,
        )
    assert stopped.trials[0].state == FAIL
    Heartbeat().retry_callback()(stopped, stopped.trials[0])
    stopped.optimize(
        Objective(cfg, distributions, workspace, CheckpointStore.at(str(tmp_path / "b"))),
        n_trials=1,
    )

    done, retry = reference.trials[0], stopped.trials[1]
    assert retry.state == COMPLETE and retry.params == done.params
    assert retry.user_attrs["ft_resumed_from_epoch"] == 2
    assert retry.user_attrs["ft_epochs_run"] == 3 and done.user_attrs["ft_epochs_run"] == 5
    assert retry.user_attrs["ft_val_acc_curve"] == done.user_attrs["ft_val_acc_curve"]
    assert retry.value == done.value
    for key in ("energy", "hp_train_acc", "test_acc", "adaptation_l2"):
        assert retry.user_attrs[key] == done.user_attrs[key], key
