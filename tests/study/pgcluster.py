"""A private PostgreSQL server for tests that restart or stop it, or need password auth.

``initdb`` + ``pg_ctl`` on a free port under a fresh directory, so that stopping it disturbs no
other test (the shared server on 127.0.0.1:5432 trusts every local connection and must stay up).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HOST = "127.0.0.1"


class PgCluster:
    """One private server: ``start``, ``stop``, ``restart``, ``url``; ``remove`` ends it."""

    def __init__(self, user: str = "postgres", password: str | None = None) -> None:
        initdb = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not initdb:
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are needed")
        self.bin = initdb[-1].parent
        self.user, self.password = user, password
        # Not under pytest's tmp dir: the server runs as user postgres, who cannot enter it.
        self.root = Path(tempfile.mkdtemp(prefix="hpsearch-pg-"))
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.root, "postgres")
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = s.getsockname()[1]
        args = ["-D", str(self.root / "data"), "-U", user]
        if password is None:
            args.append("--auth=trust")
        else:
            (self.root / "pw").write_text(password + "\n")
            if self._as_postgres:
                shutil.chown(self.root / "pw", "postgres")
            args += ["--auth=scram-sha-256", f"--pwfile={self.root / 'pw'}"]
        self._run("initdb", *args)

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as_postgres, str(self.bin / tool), *args], check=True, capture_output=True
        )

    def _ctl(self, *args: str) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.root / "data"),
            "-w",
            "-l",
            str(self.root / "log"),
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses={HOST}",
            *args,
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: open sessions are terminated (what a restart or failover does to them)."""
        self._ctl("-m", mode, "stop")

    def restart(self) -> None:
        self._ctl("-m", "fast", "restart")

    def url(self, database: str = "postgres") -> str:
        auth = self.user if self.password is None else f"{self.user}:{self.password}"
        return f"postgresql+psycopg2://{auth}@{HOST}:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh database on this server; its URL."""
        from sqlalchemy import create_engine, text

        name = f"hpsearch_test_{uuid.uuid4().hex[:12]}"
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def remove(self) -> None:
        subprocess.run(
            [
                *self._as_postgres,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A private trust-auth server, running; removed after the test."""
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()
