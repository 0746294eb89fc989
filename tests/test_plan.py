"""The study plan: computed once per process and handed down; a config check loads no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from test_schedules import tiny

import hpsearch.app
import hpsearch.plan
from hpsearch.app import compose_config
from hpsearch.plan import plan_study


def test_the_plan_holds_the_space_the_fixed_trials_and_both_kinds_of_arms(tmp_path: Path) -> None:
    cfg = compose_config(
        tiny(
            tmp_path,
            "schedule=lp_ft",
            "study.baselines=[ft_only,early_hp]",
            "study.confirm.baselines=[ft_only]",
            "study.enqueue=[{ft.lr: 0.01}]",
        )
    )
    plan = plan_study(cfg)
    # lp_ft fixes HP (until converged): hp.epochs is moot, the learning rates stay searched
    assert "hp.epochs" not in plan.distributions and "ft.lr" in plan.distributions
    assert plan.enqueued == [{"ft.lr": 0.01}]
    assert [a.name for a in plan.baselines] == ["ft_only", "early_hp"]
    assert [a.name for a in plan.confirm_arms] == ["ft_only"]
    assert plan.arm("early_hp") is plan.baselines[1]


def test_a_search_computes_its_plan_once_and_loads_each_baseline_schedule_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole command in this process (main -> Hydra -> worker -> three trials, one of
    them a baseline): the search space is parsed once, and each schedule the plan lists (the
    baseline lp_ft, the confirmation arms ft_only and lp_ft by default) is read once, not again
    for the baseline's trial."""
    calls = {"space": 0, "schedule": 0}
    parse, load = hpsearch.plan.parse_search_space, hpsearch.plan.load_schedule

    def counted_parse(*args, **kwargs):
        calls["space"] += 1
        return parse(*args, **kwargs)

    def counted_load(*args, **kwargs):
        calls["schedule"] += 1
        return load(*args, **kwargs)

    monkeypatch.setattr(hpsearch.plan, "parse_search_space", counted_parse)
    monkeypatch.setattr(hpsearch.plan, "load_schedule", counted_load)
    monkeypatch.setattr(hpsearch.app, "_checked", False)
    monkeypatch.setattr(hpsearch.app, "_plan", None)
    monkeypatch.chdir(tmp_path)
    args = tiny(tmp_path, "study.n_trials=3", "study.baselines=[lp_ft]")
    assert compose_config(args).study.confirm.baselines == ["ft_only", "lp_ft"]
    calls.update(space=0, schedule=0)
    monkeypatch.setattr(sys, "argv", ["hpsearch", *args, f"hydra.run.dir={tmp_path / 'run'}"])
    hpsearch.app.main()
    assert calls == {"space": 1, "schedule": 3}


def test_checking_a_config_whose_storage_is_unreachable_imports_no_torch(tmp_path: Path) -> None:
    url = "storage.url=postgresql+psycopg2://u:secret@127.0.0.1:9/x"  # port 9: nothing listens
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hpsearch", url],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("hpsearch: error")]
    assert len(errors) == 1 and "storage.url" in errors[0], done.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    assert "hpsearch.plan" in imported  # the check got as far as the study plan
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]
