"""End to end on the toy experiment: pruner=energy prunes at the gate, before any FT epoch."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import run_cli
from optuna.trial import TrialState

pytestmark = pytest.mark.slow  # searches through the command line

HP_METRICS = (
    "energy",
    "hp_train_acc",
    "hp_train_loss",
    "hp_val_acc",
    "head_norm",
    "tau",
    "label_smoothing",
    "head_depth",
    "ft_lr",
    "energy_curve",
)


def test_toy_study_with_energy_pruner(workdir: Path) -> None:
    """The default toy study with the default energy pruner (the outcome model at the gate and
    after every FT epoch): it prunes once it has its startup trials, at the gate or after an FT
    epoch, and every trial it judged at the gate records the decision."""
    result = run_cli(
        ["study.n_trials=24", "pruner=energy", "progress=false"],
        cwd=workdir,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pruned (" in result.stderr + result.stdout

    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{workdir}/storage/hpsearch.db")
    trials = study.get_trials()
    assert len(trials) == 24
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [t.user_attrs.get("gate_reason") for t in trials]
    assert all(t.user_attrs["pruned_at"].startswith(("gate", "ft_epoch_")) for t in pruned)
    assert all(t.user_attrs["gate_decision"] in ("keep", "prune") for t in trials)
    gate_pruned = [t for t in pruned if t.user_attrs["pruned_at"] == "gate"]
    for t in gate_pruned:
        assert t.user_attrs["ft_epochs_run"] == 0 and t.intermediate_values == {}
        assert all(key in t.user_attrs for key in HP_METRICS)
        assert t.user_attrs["gate_decision"] == "prune"
        assert t.user_attrs["gate_probability"] < 0.05  # pruner.min_prob's default
        assert "ft_val_acc" not in t.user_attrs
    kept = [
        t
        for t in trials
        if t.user_attrs.get("gate_decision") == "keep" and "gate_probability" in t.user_attrs
    ]
    assert kept and all(t.user_attrs["gate_probability"] >= 0.05 for t in kept)
    first = sorted(trials, key=lambda t: t.number)[:5]
    assert all(t.state == TrialState.COMPLETE for t in first)  # startup: never pruned
    assert study.best_trial.state == TrialState.COMPLETE
    assert study.user_attrs["bound_trials"] == len(study.get_trials(states=(TrialState.COMPLETE,)))
    assert study.user_attrs["bound_c_hat"] > 0


def test_diverged_head_probing_fails_its_trial_and_the_study_goes_on(
    workdir: Path, monkeypatch
) -> None:
    """An absurd HP learning rate makes the head's weights overflow: the trial FAILS with the
    signal named, it never reaches FT, and the worker runs the next trial."""
    from hpsearch.app import compose_config
    from hpsearch.study.worker import run_search

    monkeypatch.chdir(workdir)
    cfg = compose_config(["pruner=energy", "study.n_trials=2", "ft.epochs=1", "progress=false"])
    cfg.search_space["hp.lr"] = {"type": "float", "low": 1e30, "high": 1e31, "log": True}
    study = run_search(cfg)

    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    for t in study.trials:
        assert "not finite" in t.user_attrs["fail_reason"]
        assert t.user_attrs["gate_decision"] == "fail" and "ft_epochs_run" not in t.user_attrs


def test_a_later_study_learns_from_an_earlier_one(workdir: Path) -> None:
    """Study `later` names study `toy` as its prior: its gate decisions are fitted on toy's
    trials too (gate_prior_trials). A prior study that does not exist is one line, exit 2, and
    the new study is not created."""
    url = f"sqlite:///{workdir}/storage/hpsearch.db"
    base = ["ft.epochs=1", "progress=false", "data.train_per_class=60", "data.val_per_class=40"]
    first = run_cli([*base, "study.n_trials=6"], cwd=workdir, env={"OMP_NUM_THREADS": "1"})
    assert first.returncode == 0, first.stderr[-2000:]
    bad = run_cli(
        [
            *base,
            "study.n_trials=2",
            "study.name=other",
            "pruner=energy",
            "pruner.prior_studies=[toy,nope]",
        ],
        cwd=workdir,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "hpsearch: error: pruner.prior_studies: no study 'nope' in "
        "'sqlite:///storage/hpsearch.db'; it has toy"
    ]  # storage.url as the user gave it
    assert optuna.get_all_study_names(url) == ["toy"]

    later = run_cli(
        [
            *base,
            "study.n_trials=4",
            "study.name=later",
            "pruner=energy",
            "pruner.n_startup_trials=2",
            "pruner.top_k=1",
            "pruner.prior_studies=[toy]",
        ],
        cwd=workdir,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert later.returncode == 0, later.stderr[-2000:]
    trials = optuna.load_study(study_name="later", storage=url).get_trials()
    decided = [t for t in trials if "gate_probability" in t.user_attrs]
    assert decided and all(t.user_attrs["gate_prior_trials"] == 6 for t in decided)
    # a prior decides from the first trial: no startup wait for the trials it judged
    assert trials[0].number in {t.number for t in decided}
