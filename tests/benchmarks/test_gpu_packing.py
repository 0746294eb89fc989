"""benchmarks/gpu_packing.py --smoke: K = 1 and 2 workers through the real launcher on generated
images (on the CPU here; the same code path that shares a GPU), and its argument checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # the benchmark scripts end to end

SCRIPT = REPO / "benchmarks" / "gpu_packing.py"


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )


def test_smoke_runs_the_same_trials_at_every_k(tmp_path: Path) -> None:
    out = tmp_path / "out" / "packing.json"
    result = run(["--smoke", "--workdir", str(tmp_path / "work"), "--json", str(out)], tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["settings"]["ks"] == [1, 2] and data["settings"]["trials"] == 2
    runs = {r["k"]: r for r in data["runs"]}
    assert set(runs) == {1, 2}
    for r in runs.values():
        assert r["trials"] == 2, r
        assert r["trials_per_hour"] > 0 and r["wall_s"] > r["steady_s"] > 0
        assert 0.0 <= r["val_acc_mean"] <= 1.0
    # Each K ran through the launcher with K workers: K worker logs for K = 2, none for K = 1.
    logs = tmp_path / "work" / "logs"
    assert sorted(p.name for p in logs.glob("pack-k2-r0/*/worker-*.log")) == [
        "worker-0.log",
        "worker-1.log",
    ]
    assert not list(logs.glob("pack-k1-r0/*"))
    assert all("trial" in p.read_text() for p in logs.glob("pack-k2-r0/*/worker-*.log"))
    table = data["table"]
    assert table["1"]["gain_vs_first_k"][0] == 1.0
    assert "| K | trials/hour |" in result.stdout and "best K = " in result.stdout


def test_trials_must_divide_among_every_k(tmp_path: Path) -> None:
    result = run(["--smoke", "--ks", "1", "2", "4", "--trials", "6"], tmp_path)
    assert result.returncode == 2
    assert "--trials 6 must be a multiple of every K (not of [4])" in result.stderr
