"""Shared fixtures: a fresh storage directory per test, and the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python -m hpsearch ARGS`` in ``cwd`` (so storage/ lands there); output captured. The
    subprocess imports this checkout's package, also where another one is pip-installed."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hpsearch", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory; the CLI writes storage/ under it."""
    return tmp_path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts its own PostgreSQL cluster (the ``pg_cluster`` fixture: initdb, server
    restarts and stops) is slow: it leaves the fast tier (``-m 'not slow'``)."""
    for item in items:
        if "pg_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
