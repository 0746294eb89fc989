"""benchmarks/pipeline.py's measuring helpers: the ABBA order of the arms, the intervals and the
paired ratios it prints (the timings themselves are the benchmark's, never asserted here)."""

from __future__ import annotations

import importlib.util
import math
import sys

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
