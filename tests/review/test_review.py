"""Reviewing a study: mode=report's files, mode=dashboard's HTTP API, and the dashboard in a real
browser (headless Chromium).

One small toy study is made with the CLI (median pruner settings that prune), plus one trial
that failed and one still running, both through optuna's own API; every test reads it.
The browser screenshot is kept in ``storage/test-artifacts/`` of the repository (or
``$HPSEARCH_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import run_cli

from hpsearch.stats import bound_stats, spearman_rho

STUDY = "review-toy"
STORAGE = "sqlite:///storage/hpsearch.db"
TINY = [
    "progress=false",
    "ft.epochs=3",
    "data.train_per_class=60",
    "data.val_per_class=40",
    "data.test_per_class=40",
    "data.synthetic.source_per_class=100",
    "data.synthetic.source_epochs=5",
]
SEARCH = [
    f"study.name={STUDY}",
    "study.n_trials=5",
    "pruner=median",
    "pruner.n_startup_trials=2",
    "pruner.n_warmup_steps=0",
    *TINY,
]
PLOTS = (
    "ft_acc_vs_tau",
    "energy_vs_adaptation",
    "energy_vs_ft_acc",
    "optimization_history",
    "param_importances",
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",
]
# Where the dashboard screenshot is kept for a person to look at: $HPSEARCH_TEST_ARTIFACTS, else the
# test's temporary directory (tests never write into the checkout).
ARTIFACTS_ENV = "HPSEARCH_TEST_ARTIFACTS"


def _fail(trial: optuna.Trial) -> float:
    raise RuntimeError("a trial that fails, for the report")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working dir whose storage holds the study, and the search's output in search.log."""
    root = tmp_path_factory.mktemp("review")
    proc = run_cli(SEARCH, root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (root / "search.log").write_text(proc.stdout + proc.stderr)
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{root}/storage/hpsearch.db")
    study.optimize(_fail, n_trials=1, catch=(RuntimeError,))  # optuna marks it FAIL
    study.ask()  # a worker that has started a trial and not finished it
    return root


@pytest.fixture(scope="module")
def report_dir(study_dir: Path) -> Path:
    proc = run_cli(["mode=report", f"study.name={STUDY}"], study_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return study_dir / "storage" / "reports" / STUDY


def _study(study_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{study_dir}/storage/hpsearch.db")


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is no PNG"
    return struct.unpack(">II", head[16:24])


# ---------------------------------------------------------------------------- statistics


def test_spearman_rho_ranks_with_ties_and_rejects_degenerate_input() -> None:
    assert spearman_rho([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman_rho([1, 2, 3, 4], [9, 1, 0, -5]) == pytest.approx(-1.0)
    # x ranks 1, 2.5, 2.5, 4 against y ranks 1..4: Pearson of the ranks.
    assert spearman_rho([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert spearman_rho([1.0], [2.0]) is None
    assert spearman_rho([1, 1, 1], [1, 2, 3]) is None


def test_bound_stats_takes_the_largest_ratio_of_complete_trials() -> None:
    def trial(state: optuna.trial.TrialState, energy: float, adapt: float | None):
        attrs = {"energy": energy} if adapt is None else {"energy": energy, "adaptation_l2": adapt}
        return optuna.trial.create_trial(
            state=state, value=0.5 if state.name == "COMPLETE" else None, user_attrs=attrs
        )

    C, P = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
    trials = [
        trial(C, 0.5, 1.0),
        trial(C, 0.25, 1.0),
        trial(C, 0.0, 0.3),
        trial(P, 0.1, None),
        trial(C, 1.0, 1.5),
    ]
    stats = bound_stats(trials)
    assert stats["c_hat"] == pytest.approx(4.0)  # 1.0 / 0.25; energy 0 and pruned don't count
    assert stats["n_ratio"] == 3 and stats["n_rho"] == 4


# ---------------------------------------------------------------------------- progress lines


def test_search_prints_one_progress_line_per_trial(study_dir: Path) -> None:
    log = (study_dir / "search.log").read_text()
    lines = [line for line in log.splitlines() if "] - trial " in line]
    assert len(lines) == 5
    for line in lines:
        assert "tau=" in line and "eps=" in line and "depth=" in line and "energy=" in line
        assert "| best " in line
        assert "ft_val_acc=" in line or "pruned (" in line
    pruned = [line for line in lines if "pruned (" in line]
    assert pruned, "the median pruner settings should prune a trial"
    assert all("pruned (ft_epoch_" in line and "FT val acc" in line for line in pruned)


# ---------------------------------------------------------------------------- report


def test_report_writes_every_file(report_dir: Path) -> None:
    names = ["summary.md", "trials.csv", "config.yaml", "plotly.min.js"]
    names += [f"{p}.{ext}" for p in PLOTS for ext in ("png", "html")]
    for name in names:
        assert (report_dir / name).is_file(), name
    for p in PLOTS:
        png = report_dir / f"{p}.png"
        width, height = _png_size(png)
        assert width >= 600 and height >= 400
        assert png.stat().st_size > 10_000, f"{png} looks blank"
        html = (report_dir / f"{p}.html").read_text()
        assert 'src="plotly.min.js"' in html and "Plotly.newPlot" in html


def test_trials_csv_has_one_row_per_trial(study_dir: Path, report_dir: Path) -> None:
    study = _study(study_dir)
    with open(report_dir / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["number"]) for r in rows] == [t.number for t in study.trials]
    expected = {
        "number",
        "state",
        "ft_val_acc_objective",
        "energy",
        "hp_train_acc",
        "hp_val_acc",
        "ft_val_acc",
        "test_acc",
        "adaptation_l2",
        "tau",
        "label_smoothing",
        "head_depth",
        "ft_epochs_run",
        "pruned_at",
        "intermediate_ft_val_acc",
        "duration_s",
    }
    expected |= {f"params_{p}" for p in study.trials[0].params}
    assert expected <= set(rows[0])
    states = [r["state"] for r in rows]
    assert {"COMPLETE", "PRUNED", "FAIL", "RUNNING"} <= set(states)
    for row, trial in zip(rows, study.trials):
        assert row["state"] == trial.state.name
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert float(row["ft_val_acc_objective"]) == pytest.approx(trial.value)
            assert float(row["energy"]) == pytest.approx(trial.user_attrs["energy"])
            assert json.loads(row["ft_val_acc_curve"]) == pytest.approx(
                trial.user_attrs["ft_val_acc_curve"]
            )


def test_summary_names_best_trial_counts_and_bound(study_dir: Path, report_dir: Path) -> None:
    study = _study(study_dir)
    summary = (report_dir / "summary.md").read_text()
    best = study.best_trial
    assert f"**Best trial: {best.number}** — FT validation accuracy {best.value:.4f}" in summary
    states = [t.state for t in study.trials]
    S = optuna.trial.TrialState
    counts = [states.count(s) for s in (S.COMPLETE, S.PRUNED, S.FAIL, S.RUNNING, S.WAITING)]
    assert "| " + " | ".join(map(str, counts + [len(states)])) + " |" in summary
    assert "still running" in summary
    done = [t for t in study.trials if t.state == S.COMPLETE]
    c_hat = max(t.user_attrs["adaptation_l2"] / t.user_attrs["energy"] for t in done)
    assert f"**{c_hat:.4g}**" in summary
    assert "Spearman ρ" in summary and "FT epochs" in summary and "head probing (s)" in summary
    for t in study.trials:
        if t.state == S.PRUNED:
            assert f"| {t.number} | pruned | {t.user_attrs['pruned_at']}: FT val acc" in summary
    assert "| fail |" in summary


def test_report_of_unknown_study_lists_the_studies(study_dir: Path) -> None:
    proc = run_cli(["mode=report", "study.name=nope"], study_dir)
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "study.name='nope'" in err[0] and f"studies there: {STUDY}" in err[0]
    assert not (study_dir / "storage" / "reports" / "nope").exists()


def test_report_without_a_database_creates_none(tmp_path: Path) -> None:
    proc = run_cli(["mode=report"], tmp_path)
    assert proc.returncode == 2
    assert "no such database file" in proc.stderr
    assert not (tmp_path / "storage" / "hpsearch.db").exists()


# ---------------------------------------------------------------------------- dashboard


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


@pytest.fixture(scope="module")
def dashboard(study_dir: Path, report_dir: Path):
    """(base URL, study id) of a running ``python -m hpsearch mode=dashboard``."""
    port = _free_port()
    log = open(study_dir / "dashboard.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpsearch",
            "mode=dashboard",
            f"study.name={STUDY}",
            f"dashboard.port={port}",
        ],
        cwd=study_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (study_dir / "dashboard.log").read_text()[-2000:]
            try:
                studies = json.loads(_get(f"{base}/api/studies", timeout=2))["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "dashboard did not answer within 60 s"
                time.sleep(0.5)
        ids = {s["study_name"]: s["study_id"] for s in studies}
        assert STUDY in ids
        yield base, ids[STUDY]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    logged = (study_dir / "dashboard.log").read_text()
    assert f"open {base}/dashboard/studies/{ids[STUDY]}" in logged


def test_dashboard_api_serves_study_trials_and_artifacts(
    dashboard, study_dir: Path, report_dir: Path
) -> None:
    base, study_id = dashboard
    assert json.loads(_get(f"{base}/api/meta"))["artifact_is_available"] is True
    detail = json.loads(_get(f"{base}/api/studies/{study_id}"))
    assert detail["name"] == STUDY
    study_attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
    assert study_attrs["config"].startswith('{"mode": ')  # shown cut at 1024 characters
    trials = {t["number"]: t for t in detail["trials"]}
    study = _study(study_dir)
    assert set(trials) == {t.number for t in study.trials}
    for t in study.trials:
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            attrs = {a["key"]: a["value"] for a in trials[t.number]["user_attrs"]}
            assert float(attrs["energy"]) == pytest.approx(t.user_attrs["energy"])
            steps = {v["step"]: v["value"] for v in trials[t.number]["intermediate_values"]}
            assert steps == pytest.approx(t.intermediate_values)
    # The report's summary is one of the study's artifacts, served by the dashboard.
    summary = [a for a in detail["artifacts"] if a["filename"] == "report-summary.md"]
    assert len(summary) == 1
    body = _get(f"{base}/artifacts/{study_id}/{summary[0]['artifact_id']}").decode()
    assert body == (report_dir / "summary.md").read_text()
    config = [a for a in detail["artifacts"] if a["filename"] == "report-config.yaml"]
    body = _get(f"{base}/artifacts/{study_id}/{config[0]['artifact_id']}").decode()
    assert f"name: {STUDY}" in body and "n_trials: 5" in body


def test_dashboard_on_a_taken_port_is_a_one_line_error(study_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run_cli(["mode=dashboard", f"dashboard.port={port}"], study_dir, timeout=60)
    assert proc.returncode == 2
    assert f"hpsearch: error: dashboard.port={port}" in proc.stderr
    # the port is checked before anything is printed: no address to open, no server banner
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stdout + proc.stderr


def test_dashboard_port_out_of_range_is_rejected(study_dir: Path) -> None:
    proc = run_cli(["mode=dashboard", "dashboard.port=70000"], study_dir, timeout=60)
    assert proc.returncode == 2 and "dashboard.port=70000" in proc.stderr


# ---------------------------------------------------------------------------- real browser


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed (.ci/run installs it: apt-get install chromium)")
    return subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_dashboard_renders_in_chromium(dashboard, tmp_path: Path) -> None:
    base, study_id = dashboard
    page = f"{base}/dashboard/studies/{study_id}"
    static = _get(f"{base}/dashboard").decode()
    assert STUDY not in static  # so finding the name below means the app rendered it

    proc = _chromium(["--dump-dom", page], tmp_path / "profile-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{STUDY} (id={study_id})" in proc.stdout

    artifacts = Path(os.environ.get(ARTIFACTS_ENV, tmp_path / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "dashboard_study.png"
    shot.unlink(missing_ok=True)
    proc = _chromium(
        ["--window-size=1400,1000", f"--screenshot={shot}", page], tmp_path / "profile-shot"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _png_size(shot) == (1400, 1000)
    assert shot.stat().st_size > 30_000, "the screenshot looks blank"


@pytest.mark.slow
def test_report_html_renders_offline_in_chromium(report_dir: Path, tmp_path: Path) -> None:
    page = (report_dir / "energy_vs_adaptation.html").as_uri()
    proc = _chromium(["--dump-dom", page], tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'class="main-svg"' in proc.stdout  # plotly drew the figure from the local plotly.js
    assert "Spearman" in proc.stdout
