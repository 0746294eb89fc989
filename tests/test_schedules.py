"""Named schedules: each composes, validates and runs one trial; baselines; HP's stop rule."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from conftest import run_cli
from omegaconf import OmegaConf

from hpsearch.app import compose_config
from hpsearch.data.features import CachedOutputs
from hpsearch.errors import ConfigError
from hpsearch.models import TransferNet
from hpsearch.plan import plan_study
from hpsearch.schedules import available
from hpsearch.study.worker import run_search
from hpsearch.trial.hp import STOP_CONVERGED, STOP_MAX_EPOCHS, STOP_TAU, converged, head_probe

NAMED = ["ft_only", "lp_ft", "early_hp", "hp_smooth", "mlp_head", "partial_copy"]


def tiny(tmp: Path, *extra: str) -> list[str]:
    """The toy at a size where one trial takes well under a second."""
    return [
        "progress=false",
        "ft.epochs=1",
        "hp.max_epochs=12",
        "data.train_per_class=40",
        "data.val_per_class=20",
        "data.test_per_class=20",
        "data.synthetic.source_per_class=50",
        "data.synthetic.source_epochs=2",
        f"storage.url=sqlite:///{tmp}/s.db",
        f"storage.cache_dir={tmp}/cache",
        *extra,
    ]


def test_every_named_schedule_is_a_file():
    assert set(NAMED) | {"none"} == set(available())


@pytest.mark.parametrize("name", NAMED)
def test_named_schedule_runs_one_trial(tmp_path: Path, name: str):
    # backbone=mlp has two stages, so partial_copy copies one and re-initialises the other.
    cfg = compose_config(
        tiny(
            tmp_path,
            f"schedule={name}",
            "search_space=none",
            "study.n_trials=1",
            "backbone=mlp",
            f"study.name={name}",
        )
    )
    study = run_search(cfg)
    (trial,) = study.trials
    a = trial.user_attrs
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert a["schedule"] == name and 0.0 <= a["ft_val_acc"] <= 1.0
    assert a["layers_copied"] == (1 if name == "partial_copy" else 2)
    assert a["head_depth"] == (2 if name == "mlp_head" else 1)
    assert a["label_smoothing"] == (0.3 if name == "hp_smooth" else 0.0)
    if name == "ft_only":
        assert (a["tau"], a["hp_epochs_run"], a["hp_stop_reason"]) == (0, 0, STOP_TAU)
    elif name == "early_hp":
        assert (a["tau"], a["hp_epochs_run"], a["hp_stop_reason"]) == (4, 4, STOP_TAU)
    else:  # to convergence, capped by hp.max_epochs=12
        assert a["hp_until_converged"] and a["tau"] == a["hp_epochs_run"] <= 12
        assert a["hp_stop_reason"] in (STOP_CONVERGED, STOP_MAX_EPOCHS)
        assert a["hp_converged"] == (a["hp_stop_reason"] == STOP_CONVERGED)
        assert len(a["energy_curve"]) == a["hp_epochs_run"] + 1


def test_schedule_keys_leave_the_search_space(tmp_path: Path):
    space = set(compose_config(tiny(tmp_path)).search_space)
    assert {"hp.epochs", "hp.label_smoothing", "head.depth", "hp.lr", "ft.lr"} <= space
    lp_ft = plan_study(compose_config(tiny(tmp_path, "schedule=lp_ft"))).distributions
    assert set(lp_ft) == {"hp.lr", "ft.lr"}  # hp.epochs is moot: HP runs until converged
    ft_only = plan_study(compose_config(tiny(tmp_path, "schedule=ft_only"))).distributions
    assert set(ft_only) == {"ft.lr"}  # τ = 0 makes every hp.* key moot
    early = compose_config(
        tiny(
            tmp_path,
            "schedule=early_hp",
            "schedule.set.hp.epochs=7",
            "search_space=none",
            "study.n_trials=1",
            "study.name=e",
        )
    )
    assert run_search(early).trials[0].user_attrs["tau"] == 7


def test_baselines_are_enqueued_once_with_their_schedule(tmp_path: Path):
    args = tiny(
        tmp_path, "study.baselines=[ft_only,lp_ft,hp_smooth]", "study.n_trials=4", "study.name=b"
    )
    study = run_search(compose_config(args))
    first = study.trials[:3]
    assert [t.user_attrs["schedule"] for t in first] == ["ft_only", "lp_ft", "hp_smooth"]
    assert all(t.user_attrs["baseline"] for t in first)
    # Params hold what the baseline ran, where the search space can express it; moot keys
    # (τ for ft_only's hp.*, hp.epochs when converging) are left out.
    assert first[0].params == {"head.depth": 1, "ft.lr": 0.01}
    assert first[1].params["hp.label_smoothing"] == 0.0 and "hp.epochs" not in first[1].params
    assert first[2].params["hp.label_smoothing"] == 0.3
    assert first[2].user_attrs["label_smoothing"] == 0.3
    searched = study.trials[3]
    assert searched.user_attrs["schedule"] == "none" and searched.user_attrs["baseline"] is False
    again = run_search(compose_config(args[:-2] + ["study.n_trials=1", "study.name=b"]))
    assert sum(bool(t.user_attrs.get("baseline")) for t in again.trials) == 3


@pytest.mark.parametrize(
    "override, key",
    [
        ("study.baselines=[lp_ft,nope]", "study.baselines[1]: unknown schedule 'nope'"),
        ("study.baselines=[lp_ft,lp_ft]", "listed twice"),
        ("+schedule.set.hp.nope=1", "unknown config key 'hp.nope'"),
        ("+schedule.set.backbone.layers_copied=most", "backbone.layers_copied='most'"),
        ("schedule=hp_smooth schedule.set.hp.label_smoothing=1.5", "hp.label_smoothing=1.5"),
    ],
)
def test_bad_schedule_input_is_one_config_error(tmp_path: Path, override: str, key: str):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        compose_config(tiny(tmp_path, *override.split()))


def test_cli_rejects_unknown_baseline_before_touching_the_study(tmp_path: Path):
    proc = run_cli(["study.baselines=[ft_only,xx]"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "study.baselines[1]: unknown schedule 'xx'; available:" in proc.stderr
    assert not (tmp_path / "storage" / "hpsearch.db").exists()


# --- the stop rule ------------------------------------------------------------------------------


def test_converged_rule():
    assert not converged([1.0, 0.9, 0.8], window=5, tol=1e-3)  # too few epochs to judge
    assert not converged([1.0] + [0.5] * 4 + [0.4], window=5, tol=1e-3)
    assert converged([1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.4996], window=5, tol=1e-3)
    assert converged([0.5] * 5 + [0.6], window=5, tol=1e-3)  # got worse: no improvement


def plateau_problem(seed: int = 0):
    """Overlapping Gaussian classes: the best linear head keeps a clearly non-zero loss."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(200)
    x = torch.randn(3, 8, generator=gen)[y] + 1.5 * torch.randn(600, 8, generator=gen)
    outputs = CachedOutputs({"train": x, "val": x[:60]}, torch.device("cpu"))
    torch.manual_seed(seed)
    net = TransferNet([], [], torch.nn.Sequential(torch.nn.Linear(8, 3)))
    return net, outputs, y


def hp_config(**kw):
    base = dict(
        epochs=3,
        lr=0.05,
        optimizer="sgd",
        momentum=0.9,
        weight_decay=0.0,
        batch_size=64,
        label_smoothing=0.0,
        until_converged=True,
        max_epochs=200,
        converge_tol=1e-3,
        converge_window=5,
    )
    return OmegaConf.create({**base, **kw})


def test_until_converged_stops_when_the_loss_plateaus():
    net, outputs, y = plateau_problem()
    result = head_probe(net, outputs, y, y[:60], hp_config(), seed=0, eval_batch_size=256)
    assert result.stop_reason == STOP_CONVERGED and result.converged
    assert 5 <= result.epochs_run < 100  # plateaued long before the cap
    curve = result.objective_curve
    assert len(curve) == result.epochs_run + 1 == len(result.energy_curve)
    assert curve[-6] - curve[-1] < 1e-3 * curve[-6]  # the rule as stated
    assert not converged(curve[:-1], 5, 1e-3)  # and it stopped at the first epoch it held
    assert curve[-1] > 0.3  # a real plateau, not a loss driven to zero


def test_until_converged_is_capped_by_max_epochs():
    net, outputs, y = plateau_problem()
    result = head_probe(
        net,
        outputs,
        y,
        y[:60],
        hp_config(converge_tol=0.0, max_epochs=9),
        seed=0,
        eval_batch_size=256,
    )
    assert (result.epochs_run, result.stop_reason) == (9, STOP_MAX_EPOCHS)


def test_fixed_tau_runs_all_epochs_and_reports_the_rule():
    net, outputs, y = plateau_problem()
    result = head_probe(
        net,
        outputs,
        y,
        y[:60],
        hp_config(until_converged=False, epochs=40),
        seed=0,
        eval_batch_size=256,
    )
    assert (result.epochs_run, result.stop_reason) == (40, STOP_TAU)
    assert result.converged  # 40 epochs is past the plateau: the rule holds, but did not stop HP
