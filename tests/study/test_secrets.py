"""No password leaks: not in output, logs, errors, Hydra's files, the stored config or a report.

The unit tests check each form :mod:`hpsearch.secrets` masks; the scan test runs real searches,
reports and failing runs against a private password-protected PostgreSQL with the password in
every form a user may give it, then greps all their output and every file they wrote.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import REPO, run_cli
from pgcluster import HOST, PgCluster

from hpsearch import secrets
from hpsearch.errors import safe_url

TINY = [
    "progress=false",
    "device=cpu",
    "study.sampler=random",
    "data.train_per_class=20",
    "data.val_per_class=10",
    "data.test_per_class=10",
    "data.synthetic.source_per_class=50",
    "data.synthetic.source_epochs=2",
    "hp.epochs=1",
    "ft.epochs=1",
    "search_space=none",
]


@pytest.fixture(autouse=True)
def _fresh_registry():
    saved = set(secrets._known)
    secrets._known.clear()
    yield
    secrets._known.clear()
    secrets._known.update(saved)


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql+psycopg2://u:Pw-123@h:5432/db", "postgresql+psycopg2://u:***@h:5432/db"),
        (
            "postgresql+psycopg2://u@h/db?password=Pw-123",
            "postgresql+psycopg2://u@h/db?password=***",
        ),
        (
            "postgresql://u@h/db?sslmode=require&sslpassword=Pw-123&application_name=x",
            "postgresql://u@h/db?sslmode=require&sslpassword=***&application_name=x",
        ),
        ("postgresql://u:p%40ss%2Fw@h/db", "postgresql://u:***@h/db"),
        ("sqlite:///storage/hpsearch.db", "sqlite:///storage/hpsearch.db"),
    ],
)
def test_safe_url_masks_every_url_form(url, shown):
    assert safe_url(url) == shown


def test_registered_secrets_are_masked_raw_and_url_encoded(tmp_path):
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("# comment\ndbhost:5432:*:hps:pass\\:word@1\n")
    secrets.register_environment(
        {
            "PGPASSWORD": "env-Secret",
            "PGPASSFILE": str(pgpass),
            "HPSEARCH_STORAGE_URL": "postgresql://u:url%2Bpw@h/db",
        }
    )
    text = "a env-Secret b pass:word@1 c pass%3Aword%401 d url+pw e url%2Bpw"
    assert secrets.redact(text) == "a *** b *** c *** d *** e ***"
    # a driver's DSN echo, key=value with a secret key
    assert secrets.redact("dsn: host=h password=xyz123 user=u") == "dsn: host=h password=*** user=u"


def test_command_line_urls_with_a_password_move_to_the_environment():
    env: dict[str, str] = {}
    argv = [
        "storage.url=postgresql://u:Pw-123@h/db",
        "+pruner.prior_storage=postgresql://u@h/db?password=Pw-456",
        "study.name=plain",
        "storage.artifacts=/x",
    ]
    hidden = secrets.hide_secret_overrides(argv, env)
    assert hidden == [
        "storage.url=${oc.env:HPSEARCH_SECRET_STORAGE_URL}",
        "+pruner.prior_storage=${oc.env:HPSEARCH_SECRET_PRUNER_PRIOR_STORAGE}",
        "study.name=plain",
        "storage.artifacts=/x",
    ]
    assert env["HPSEARCH_SECRET_STORAGE_URL"] == "postgresql://u:Pw-123@h/db"
    assert secrets.redact("Pw-123 Pw-456") == "*** ***"


def test_short_secrets_are_masked_in_urls_only():
    secrets.register("ab")
    assert secrets.redact("tab postgresql://u:ab@h/db") == "tab postgresql://u:***@h/db"


# ---------------------------------------------------------------------------- the scan


@pytest.fixture(scope="module")
def password_cluster():
    password = "Hp-" + uuid.uuid4().hex[:6] + "@x"  # '@' must be URL-encoded in a URL
    cluster = PgCluster(user="hps", password=password)
    cluster.start()
    try:
        yield cluster, password
    finally:
        cluster.remove()


def _database(cluster: PgCluster, password: str) -> tuple[str, str]:
    """A fresh database; its URL without the password, and the same with it (userinfo)."""
    from sqlalchemy import create_engine, text

    name = f"hps_{uuid.uuid4().hex[:10]}"
    admin = f"postgresql+psycopg2://hps:{quote(password, safe='')}@{HOST}:{cluster.port}/postgres"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    bare = f"postgresql+psycopg2://hps@{HOST}:{cluster.port}/{name}"
    return bare, admin.rsplit("/", 1)[0] + "/" + name


def _crash_hook(tmp: Path) -> Path:
    """A sitecustomize that makes the run raise an unexpected exception inside Hydra's job (the
    path of a real bug: Hydra prints 'Error executing job with overrides: [...]')."""
    hook = tmp / "crash_hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import hpsearch.app as app\n\n"
        "def _crash(cfg, *_plan):\n"
        "    url = str(cfg.storage.url)\n"
        "    raise RuntimeError('unexpected failure while connected to ' + url)\n\n"
        "app.run = _crash\n"
    )
    return hook


def _leaks(password: str, outputs: list[str], root: Path) -> list[str]:
    forms = {password, quote(password, safe=""), quote(password)}
    found = [f"output {i}" for i, out in enumerate(outputs) if any(f in out for f in forms)]
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(f.encode() in data for f in forms):
                found.append(str(path.relative_to(root)))
    return found


@pytest.mark.slow
def test_no_password_anywhere_whatever_the_url_form(password_cluster, tmp_path):
    """A search (2 workers), a report and two failing runs (a crash inside Hydra's job, a wrong
    database) for each form of the password: userinfo and ``?password=`` on the command line,
    the whole URL in HPSEARCH_STORAGE_URL, PGPASSWORD, a .pgpass file. Nothing the runs print
    or write holds the password, and the stored config does not either."""
    cluster, password = password_cluster
    encoded = quote(password, safe="")
    secret_home = tmp_path / "home"  # the .pgpass lives outside the scanned tree
    secret_home.mkdir()
    pgpass = secret_home / "pgpass"
    pgpass.write_text(f"{HOST}:{cluster.port}:*:hps:{password}\n")
    pgpass.chmod(0o600)
    hook = _crash_hook(tmp_path)
    forms = {
        "userinfo": lambda bare, full: ([f"storage.url={full}"], {}),
        "query": lambda bare, full: ([f"storage.url={bare}?password={encoded}"], {}),
        "environment URL": lambda bare, full: (
            ["storage=postgres"],
            {"HPSEARCH_STORAGE_URL": full},
        ),
        "PGPASSWORD": lambda bare, full: ([f"storage.url={bare}"], {"PGPASSWORD": password}),
        ".pgpass": lambda bare, full: ([f"storage.url={bare}"], {"PGPASSFILE": str(pgpass)}),
    }
    outputs: list[str] = []
    runs = tmp_path / "runs"
    for form, make in forms.items():
        bare, full = _database(cluster, password)
        args, env = make(bare, full)
        cwd = runs / form.replace(" ", "_").replace(".", "")
        cwd.mkdir(parents=True)
        common = [*TINY, *args, "study.name=scan"]
        launcher = ["workers=2"] if form in ("userinfo", "query") else []  # worker logs too
        search = run_cli([*common, *launcher, "study.n_trials=1"], cwd, env=env)
        assert search.returncode == 0, (form, search.stderr[-2000:])
        report = run_cli([*common, "mode=report"], cwd, env=env)
        assert report.returncode == 0, (form, report.stderr[-2000:])
        path = os.pathsep.join([str(hook), str(REPO)])  # the hook imports this checkout
        crash = run_cli([*common, "study.n_trials=1"], cwd, env={**env, "PYTHONPATH": path})
        assert crash.returncode != 0 and "unexpected failure" in crash.stderr, form
        assert "Error executing job" in crash.stderr, (form, crash.stderr[-2000:])
        wrong_db = [a.replace("/hps_", "/nodb_") if "storage.url" in a else a for a in common]
        env_db = {k: v.replace("/hps_", "/nodb_") for k, v in env.items()}
        missing = run_cli([*wrong_db, "study.n_trials=1"], cwd, env=env_db)
        assert missing.returncode == 2 and "does not exist" in missing.stderr, form
        for proc in (search, report, crash, missing):
            outputs += [proc.stdout, proc.stderr]
        # the stored config names the storage without its password
        from sqlalchemy import create_engine, text

        engine = create_engine(full)
        with engine.connect() as conn:
            attrs = conn.execute(text("SELECT value_json FROM study_user_attributes")).all()
        engine.dispose()
        stored = json.dumps([a[0] for a in attrs])
        assert "storage" in stored and password not in stored and encoded not in stored, form
        # the files that may name a storage are the user's alone
        for private in [*cwd.rglob(".hydra/*.yaml"), *cwd.rglob("worker-*.log")]:
            assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert not _leaks(password, outputs, runs)
    assert len(outputs) == 8 * len(forms)
