"""benchmarks/reproduce.py: the smoke run end to end, and the statistics behind the verdicts."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # the benchmark scripts end to end


def load_reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", REPO / "benchmarks" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


R = load_reproduce()


def test_smoke_runs_the_whole_pipeline(tmp_path: Path):
    out, md = tmp_path / "out", tmp_path / "docs" / "results.md"
    md.parent.mkdir()
    md.write_text("# Results\n\nkept\n")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "reproduce.py"),
            "--smoke",
            "--out",
            str(out),
            "--results-md",
            str(md),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]

    arms = R.sweep(5, R.SMOKE_LINEAR_TAUS)
    assert len(arms) == 13  # 1 + 2 ε × 3 τ linear, 3 MLP head, 3 partial copy
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 2 * len(arms)
    assert {r["arm"] for r in records} == {a.label for a in arms}
    for r in records:  # every trial ran the schedule its arm names
        assert r["head_depth"] == (2 if r["family"] == "mlp_head" else 1)
        assert r["layers_copied"] == (4 if r["family"] == "partial_copy" else 5)
        assert r["hp_until_converged"] == (r["tau_label"] == "conv")
        if r["tau_label"] not in ("conv",):
            assert r["tau"] == int(r["tau_label"])
        assert 0.0 <= r["ft_val_acc"] <= 1.0 and r["energy"] > 0

    report = (out / "report.md").read_text()
    for arm in arms:
        assert f"| {arm.label} |" in report
    for key in "abcd":
        line = next(x for x in report.splitlines() if x.startswith(f"- **({key})"))
        assert any(v in line for v in ("supported", "inconclusive", "not measured"))
    assert "ĉ = max" in report and "--smoke" in report
    assert (out / "tau_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert text.startswith("# Results\n\nkept\n") and "<!-- reproduce:smoke begin -->" in text
    assert "](../out/tau_curve.png)" in text  # the image link is relative to results.md


def test_update_section_replaces_its_own_section_only(tmp_path: Path):
    md = tmp_path / "results.md"
    R.update_section(md, "toy", "Toy", "first\n")
    R.update_section(md, "other", "Other", "kept\n")
    R.update_section(md, "toy", "Toy", "second\n")
    text = md.read_text()
    assert "second" in text and "first" not in text and "kept" in text
    assert text.count("<!-- reproduce:toy begin -->") == 1


def test_spearman():
    rho, p = R.spearman([1, 2, 3, 4, 5, 6, 7, 8], [2, 1, 4, 3, 6, 5, 8, 7])
    assert rho == pytest.approx(0.905, abs=1e-3) and p < 0.01
    rho, p = R.spearman([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])
    assert rho == pytest.approx(-1.0) and p > 0.9
    rho, _ = R.spearman([1, 1, 2, 2], [1, 2, 3, 4])  # ties take their average rank
    assert rho == pytest.approx(0.894, abs=1e-3)


def row(curve: str, tau: str, acc: float, energy: float, std: float = 0.001, n: int = 3):
    stats = {k: (0.0, 0.0) for k, _, _ in R.COLUMNS}
    stats.update(ft_val_acc=(acc, std), test_acc=(acc, std), energy=(energy, 0.01))
    family = curve.split()[0] if not curve.startswith("linear") else "linear"
    return R.Row(f"{family}_{tau}", curve, tau, 0.0, 1, 5, n, stats)


def test_claims_read_the_curves():
    taus = ["0", "1", "2", "4", "8", "16", "32", "conv"]
    peak = [0.80, 0.82, 0.84, 0.86, 0.85, 0.83, 0.82, 0.81]
    energy0 = [0.9, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2]
    rows = [row("linear ε=0", t, a, e) for t, a, e in zip(taus, peak, energy0)]
    rows += [row("linear ε=0.3", t, a, e + 0.1) for t, a, e in zip(taus[1:], peak[1:], energy0[1:])]
    a = R.claim_a(rows)
    assert a.verdict == "supported" and "τ=4" in a.evidence
    assert R.claim_c(rows).verdict == "supported"
    noisy = [row(r.curve, r.tau, r.stats["ft_val_acc"][0], 0.5, std=0.1) for r in rows]
    assert R.claim_a(noisy).verdict == "inconclusive"  # the peak is within the seeds' noise
    monotone = [row("linear ε=0", t, 0.8 + 0.01 * i, 0.5) for i, t in enumerate(taus)]
    assert R.claim_a(monotone).verdict == "not supported"
    rows += [row("mlp_head", t, 0.8, e) for t, e in (("4", 0.3), ("conv", 0.1))]
    rows += [row("partial_copy", t, 0.8, e) for t, e in (("4", 0.6), ("conv", 0.1))]
    d = R.claim_d(rows)
    assert d.verdict == "inconclusive" and "partial_copy τ=4: 0.600 vs linear 0.500" in d.evidence
