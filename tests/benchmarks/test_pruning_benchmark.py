"""benchmarks/pruning.py --smoke: every arm of the pipeline on generated images, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # the benchmark scripts end to end

ARMS = ["none", "median", "hyperband", "energy", "energy+median"]
REPLAY_ARMS = ["none", "hp_rule", "epoch_rule", "rules", "energy"]


def test_smoke_run_writes_json_and_markdown_for_every_arm(tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "out" / "pruning.json", tmp_path / "out" / "pruning.md"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "pruning.py"),
            "--smoke",
            "--out-json",
            str(out_json),
            "--out-md",
            str(out_md),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]

    data = json.loads(out_json.read_text())
    assert list(data["arms"]) == ARMS and data["settings"]["complete"]
    runs = {r["arm"]: r for r in data["runs"]}
    assert set(runs) == set(ARMS)
    none = runs["none"]
    assert none["ft_epochs"] == 3 * 2 and none["complete"] == 3  # 3 trials x 2 FT epochs
    assert none["best_val_acc"] is not None and none["best_test_acc"] is not None
    for arm in ARMS:
        assert runs[arm]["ft_epochs"] == sum(t["ft_epochs_run"] for t in runs[arm]["trials"])
        assert runs[arm]["wall_s"] > 0
    for arm in ("energy", "energy+median"):
        decisions = [t["gate_decision"] for t in runs[arm]["trials"]]
        assert all(d in ("keep", "prune") for d in decisions)
        last = runs[arm]["trials"][-1]  # after the 2 startup trials: a GP prediction
        assert last["gate_predicted_objective"] is not None
    assert data["arms"]["none"]["ft_epochs_vs_none"] == 1.0

    table = out_md.read_text()
    for arm in ARMS:
        assert f"| {arm} |" in table
    assert table in result.stdout


def _benchmark(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "pruning.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_replay_measures_every_arm_on_a_stored_table(tmp_path: Path) -> None:
    from tabledata import make_table_study, spread_values

    db = tmp_path / "table.db"
    make_table_study(f"sqlite:///{db}", "table", spread_values(24), epochs=3)
    out_json, out_md = tmp_path / "out" / "replay.json", tmp_path / "out" / "replay.md"
    result = _benchmark(
        [
            "--replay",
            str(db),
            "--orders",
            "4",
            "--budget",
            "12",
            "--processes",
            "1",
            "--pruner-startup",
            "3",
            "--out-json",
            str(out_json),
            "--out-md",
            str(out_md),
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    data = json.loads(out_json.read_text())["tables"][str(db)]
    assert data["settings"]["trials"] == 24 and data["settings"]["orders"] == 4
    assert list(data["pruners"]) == REPLAY_ARMS  # replay.pruners'
    assert data["pruners"]["none"]["ft_epochs_vs_none"]["mean"] == 1.0
    assert data["settings"]["pruners"]["hp_rule"]["n_startup_trials"] == 3
    assert data["settings"]["pruners"]["energy"]["min_prob"] == 0.05  # pruner=energy's default
    for arm in REPLAY_ARMS:
        assert data["pruners"][arm]["orders"] == 4
    table = out_md.read_text()
    assert "FT epochs vs none | regret (pts)" in table
    for arm in REPLAY_ARMS:
        assert f"| {arm} |" in table
    assert table in result.stdout


def test_replay_of_a_missing_table_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _benchmark(
        [
            "--replay",
            str(tmp_path / "nope.db"),
            "--out-json",
            str(tmp_path / "r.json"),
            "--out-md",
            str(tmp_path / "r.md"),
        ],
        tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("pruning benchmark: error: --replay")
    assert "Traceback" not in result.stderr and not (tmp_path / "r.json").exists()


def test_replay_with_several_min_probs_traces_the_gates_frontier(tmp_path: Path) -> None:
    from tabledata import make_table_study, spread_values

    db = tmp_path / "table.db"
    make_table_study(f"sqlite:///{db}", "table", spread_values(24), epochs=3)
    out_json = tmp_path / "frontier.json"
    result = _benchmark(
        [
            "--replay",
            str(db),
            "--arms",
            "none",
            "energy",
            "--min-prob",
            "0.001",
            "0.5",
            "--orders",
            "4",
            "--budget",
            "12",
            "--processes",
            "1",
            "--pruner-startup",
            "3",
            "--out-json",
            str(out_json),
            "--out-md",
            str(tmp_path / "frontier.md"),
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out_json.read_text())["tables"][str(db)]
    assert list(data["pruners"]) == ["none", "energy min_prob=0.001", "energy min_prob=0.5"]
    settings = data["settings"]["pruners"]
    assert settings["energy min_prob=0.5"]["min_prob"] == 0.5
    cost = {name: p["ft_epochs_vs_none"]["mean"] for name, p in data["pruners"].items()}
    assert cost["energy min_prob=0.5"] < cost["energy min_prob=0.001"] <= cost["none"]


def test_replay_with_a_prior_and_the_frontier(tmp_path: Path) -> None:
    """Each table replayed with the other as its prior (copied into one storage), every arm
    over its main setting, and the figure next to the markdown."""
    from tabledata import make_table_study, spread_values

    a, b = tmp_path / "a.db", tmp_path / "b.db"
    make_table_study(f"sqlite:///{a}", "a", spread_values(16), epochs=3)
    make_table_study(f"sqlite:///{b}", "b", [v * 0.5 + 0.4 for v in spread_values(16)], epochs=3)
    out_json = tmp_path / "out" / "transfer.json"
    result = _benchmark(
        ["--replay", str(a), str(b), "--prior", str(a), str(b), "--arms", "epoch_rule"]
        + ["energy", "--frontier", "--orders", "2", "--budget", "8", "--processes", "1"]
        + ["--out-json", str(out_json), "--out-md", str(tmp_path / "out" / "transfer.md")],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tables = json.loads(out_json.read_text())["tables"]
    assert tables[str(a)]["settings"]["prior"] == [str(b)]  # not itself
    energy = tables[str(b)]["settings"]["pruners"]["energy"]
    assert energy["prior_studies"] == ["a__a"]
    assert "epoch_rule epoch_quantile=0.9" in tables[str(a)]["pruners"]
    assert "energy min_prob=0.2" in tables[str(a)]["pruners"]
    assert (tmp_path / "out" / "transfer_a.png").stat().st_size > 0


def test_live_mode_takes_one_min_prob(tmp_path: Path) -> None:
    result = _benchmark(
        [
            "--smoke",
            "--min-prob",
            "0.01",
            "0.1",
            "--out-json",
            str(tmp_path / "r.json"),
            "--out-md",
            str(tmp_path / "r.md"),
        ],
        tmp_path,
    )
    assert result.returncode == 2 and "--min-prob takes one value" in result.stderr
    assert not (tmp_path / "r.json").exists()
