"""A value given on the command line for a searched key pins it; a study keeps one space."""

from __future__ import annotations

from pathlib import Path

import optuna
from conftest import run_cli
from test_schedules import tiny

from hpsearch.app import compose_checked
from hpsearch.record import TrialRecord


def test_a_command_line_value_for_a_searched_key_leaves_the_space() -> None:
    composed = compose_checked(["hp.epochs=8", "ft.lr=0.003", "hp.lr=0.05"])
    assert composed.pinned == ["hp.epochs=8", "ft.lr=0.003", "hp.lr=0.05"]
    assert set(composed.plan.distributions) == {"hp.label_smoothing", "head.depth"}
    assert (composed.cfg.hp.epochs, composed.cfg.ft.lr) == (8, 0.003)
    # a key set in the space itself, or a key the space does not search, pins nothing
    other = compose_checked(["search_space={hp.epochs:{type:int,low:1,high:2}}", "ft.epochs=2"])
    assert other.pinned == [] and "hp.epochs" in other.plan.distributions


def test_the_pinned_value_is_the_one_every_trial_runs_and_a_study_keeps_its_space(
    tmp_path: Path,
) -> None:
    first = run_cli(tiny(tmp_path, "hp.epochs=3", "ft.lr=0.003", "study.n_trials=3"), tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "hp.epochs=3 pinned: removed from the search space" in first.stderr
    assert "ft.lr=0.003 pinned: removed from the search space" in first.stderr
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path}/s.db")
    records = [TrialRecord.of(t) for t in study.trials]
    assert len(records) == 3 and all(r.tau == 3 and r.ft_lr == 0.003 for r in records)
    assert all(set(t.params) == {"hp.label_smoothing", "head.depth", "hp.lr"} for t in study.trials)
    # the same study with hp.epochs searched again: refused in one line, nothing added
    again = run_cli(tiny(tmp_path, "ft.lr=0.003", "study.n_trials=1"), tmp_path)
    assert again.returncode == 2, again.stderr[-2000:]
    errors = [x for x in again.stderr.splitlines() if x.startswith("hpsearch: error")]
    assert len(errors) == 1 and "another search space" in errors[0] and "hp.epochs" in errors[0]
    assert (
        len(optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path}/s.db").trials) == 3
    )
