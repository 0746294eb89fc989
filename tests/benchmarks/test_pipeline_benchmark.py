"""benchmarks/pipeline.py's measuring helpers: the ABBA order of the arms, the intervals and the
paired ratios it prints, and for --wait-policy the workers' environments, their concurrent epochs
and the background load (the timings themselves are the benchmark's, never asserted here)."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import time

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # the benchmark scripts end to end


def load_pipeline():
    spec = importlib.util.spec_from_file_location(
        "pipeline_bench", REPO / "benchmarks" / "pipeline.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["pipeline_bench"] = module
    spec.loader.exec_module(module)
    return module


P = load_pipeline()


def test_arms_run_in_abba_order() -> None:
    calls: list[str] = []
    arms = {name: (lambda name=name: calls.append(name) or len(calls)) for name in "ABC"}
    out = P.interleaved(arms, reps=3)
    assert calls == list("ABCCBAABC")
    assert out == {"A": [1, 6, 7], "B": [2, 5, 8], "C": [3, 4, 9]}


def test_interval_is_the_t_interval_of_the_mean() -> None:
    stats = P.interval([1.0, 2.0, 3.0, 4.0])
    assert stats["mean"] == 2.5 and stats["min"] == 1.0 and stats["max"] == 4.0
    sd = math.sqrt(sum((v - 2.5) ** 2 for v in (1, 2, 3, 4)) / 3)
    assert stats["half"] == pytest.approx(3.18 * sd / 2)  # t(0.975, df=3) = 3.18
    assert math.isnan(P.interval([5.0])["half"])


def test_paired_ratio_divides_each_repetition_by_its_partner() -> None:
    r = P.paired_ratio([2.0, 6.0, 3.0], [1.0, 2.0, 3.0])
    assert r["mean"] == pytest.approx((2 + 3 + 1) / 3) and r["min"] == 1.0 and r["max"] == 3.0


def test_the_new_arm_is_the_product_defaults() -> None:
    from hpsearch.app import OPENMP_DEFAULTS
    from hpsearch.config import HpsearchConfig

    assert P.ARMS["new"] == {"channels_last": HpsearchConfig.channels_last, **OPENMP_DEFAULTS}
    assert P.ARMS["today"] == {"channels_last": "false", "OMP_WAIT_POLICY": None}


def test_wait_policy_workers_get_the_launchers_environment(monkeypatch) -> None:
    """One worker is the command itself (torch's thread count); workers=2 gives each process
    the launcher's worker environment: cores / 2 OpenMP threads, its index; the policy arm's
    OMP_WAIT_POLICY replaces (or unsets) the one this process has."""
    from hpsearch.app import compose_config

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # as the benchmark's own process has it
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cfg = compose_config([])
    (one,) = P.workers_envs(cfg, None, 1)
    assert "OMP_WAIT_POLICY" not in one and "OMP_NUM_THREADS" not in one
    two = P.workers_envs(cfg, "PASSIVE", 2)
    cores = str(max(1, (os.cpu_count() or 1) // 2))
    assert [e["OMP_NUM_THREADS"] for e in two] == [cores, cores]
    assert [e["OMP_WAIT_POLICY"] for e in two] == ["PASSIVE", "PASSIVE"]
    assert [e["HPSEARCH_WORKER_INDEX"] for e in two] == ["0", "1"]
    assert all("OMP_WAIT_POLICY" not in e for e in P.workers_envs(cfg, None, 2))


class FakeWorker:
    """Stands in for a warm --serve process: logs what it is told, answers a fixed epoch."""

    def __init__(self, name: str, log: list[str], wall: float) -> None:
        self.name, self.log, self.wall = name, log, wall

    def send(self, what: str) -> None:
        self.log.append(f"{self.name} {what}")

    def receive(self) -> dict[str, float]:
        self.log.append(f"{self.name} done")
        return {"wall": self.wall, "cpu": 2 * self.wall}


def test_a_groups_processes_run_their_epochs_at_once_groups_in_abba_order(capsys) -> None:
    log: list[str] = []
    groups = {
        "default": [FakeWorker("d0", log, 1.0), FakeWorker("d1", log, 3.0)],
        "PASSIVE": [FakeWorker("p0", log, 1.0), FakeWorker("p1", log, 1.0)],
    }
    runs = P.concurrent_epochs(groups, reps=2)
    default_then_passive = ["d0 ft", "d1 ft", "d0 done", "d1 done"]
    default_then_passive += ["p0 ft", "p1 ft", "p0 done", "p1 done"]
    assert log == default_then_passive + default_then_passive[4:] + default_then_passive[:4]
    assert [m["wall"] for m in runs["default"]] == [[1.0, 3.0], [1.0, 3.0]]
    assert all(m["load_before"] >= 0 and m["load_after"] >= 0 for m in runs["PASSIVE"])
    assert all(m["other_cores"] >= 0 for m in runs["default"])  # the machine's, less the group's
    case = P.wait_policy_case(runs, "test case")
    assert case["policies"]["default"]["ft_wall_s"] == [2.0, 2.0]  # the mean over the workers
    assert case["policies"]["PASSIVE"]["ft_cpu_s"] == [2.0, 2.0]
    assert case["ratio_wall_default_over_PASSIVE"]["mean"] == pytest.approx(2.0)
    assert "default/PASSIVE by wall time: 2.00x" in capsys.readouterr().out


def test_background_load_runs_while_the_block_runs_and_stops_after() -> None:
    before = P.busy_cpu_seconds()
    with P.background_load(2) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
        time.sleep(0.3)
    assert all(p.returncode is not None for p in procs)
    if not math.isnan(before):  # Linux: the machine's busy time counts the loops'
        assert P.busy_cpu_seconds() > before
    with P.background_load(0) as procs:
        assert procs == []
