"""The command line end to end, as a user runs it."""

from __future__ import annotations

import math

import optuna
import pytest
from conftest import run_cli
from imagedata import make_imagefolder

from hpsearch.trial import METRICS

SET_ON_EVERY_COMPLETE_TRIAL = set(METRICS) - {"pruned_at", "confirm_of", "confirm_seed"}


def load(work, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{work}/storage/hpsearch.db")


def test_default_toy_search_leaves_complete_trials_with_every_metric(workdir):
    result = run_cli(["study.n_trials=4", "progress=false"], cwd=workdir)
    assert result.returncode == 0, result.stderr
    study = load(workdir, "toy")
    trials = study.get_trials()
    assert len(trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:
        missing = SET_ON_EVERY_COMPLETE_TRIAL - set(t.user_attrs)
        assert not missing, f"trial {t.number} lacks {sorted(missing)}"
        a = t.user_attrs
        assert len(a["energy_curve"]) == a["tau"] + 1 == a["hp_epochs_run"] + 1
        assert a["energy"] == a["energy_curve"][-1]
        assert 0 <= a["energy"] <= math.sqrt(2)
        assert t.value == a["ft_val_acc"] == a["ft_val_acc_curve"][-1]
        assert sorted(t.intermediate_values) == list(range(1, a["ft_epochs_run"] + 1))
        assert 0.0 <= a["test_acc"] <= 1.0 and a["adaptation_l2"] > 0
        assert set(t.params) == {"hp.epochs", "hp.label_smoothing", "head.depth", "hp.lr", "ft.lr"}
    assert "config" in study.user_attrs
    # The closing table names the best trial and where the database is.
    log = result.stdout + result.stderr
    assert "best trials of study 'toy'" in log and "sqlite:///storage/hpsearch.db" in log
    assert log.count("ft_val_acc=") >= 4  # one progress line per finished trial


@pytest.mark.slow
def test_tiny_imagefolder_with_random_resnet_completes(workdir):
    root = make_imagefolder(
        workdir / "images", ["ant", "bee", "cow"], train_per_class=10, test_per_class=3
    )
    result = run_cli(
        [
            "data=imagefolder",
            f"data.root={root}",
            "data.train_per_class=8",
            "data.val_per_class=2",
            "data.image_size=32",
            "backbone=resnet18",
            "backbone.weights=none",
            "search_space=none",
            "hp.epochs=1",
            "ft.epochs=1",
            "hp.batch_size=8",
            "ft.batch_size=8",
            "study.n_trials=2",
            "study.name=tiny",
            "progress=false",
        ],
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    trials = load(workdir, "tiny").get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for t in trials:
        assert t.user_attrs["hp_epochs_run"] == 1 and t.user_attrs["ft_epochs_run"] == 1
        assert t.user_attrs["test_acc"] >= 0.0
    # The decoded images and the copied part's outputs were cached under storage/.
    assert list((workdir / "storage" / "cache" / "data").glob("imagefolder-*.pt"))
    assert trials[1].user_attrs["hp_features"] in ("cache", "cache-disk")


def test_fixed_trials_from_config_run_first(workdir):
    result = run_cli(
        [
            "study.n_trials=2",
            "progress=false",
            "ft.epochs=1",
            "study.enqueue=[{hp.epochs: 0, head.depth: 2}]",
        ],
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    first = load(workdir, "toy").get_trials()[0]
    assert first.params["hp.epochs"] == 0 and first.params["head.depth"] == 2
    assert first.user_attrs["tau"] == 0 and first.user_attrs["hp_epochs_run"] == 0
