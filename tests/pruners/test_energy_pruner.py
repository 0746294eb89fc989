"""The energy pruner on synthetic trial histories, through the real gate (``trial.gate``)."""
from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.app import compose_config
from hpsearch.errors import ConfigError
from hpsearch.pruners import EnergyPruner, InvalidSignalError, make_pruner
from hpsearch.trial import set_attrs
from hpsearch.trial.gate import gate

optuna.logging.set_verbosity(optuna.logging.ERROR)


def signals(energy: float, ft_lr: float = 0.01, **extra: float) -> dict:
    """HP-phase user attrs of a trial; everything but energy and ft_lr is fixed noise-free."""
    attrs = {"energy": energy, "hp_train_acc": 0.8, "hp_train_loss": 0.6, "hp_val_acc": 0.75,
             "head_norm": 3.0, "tau": 4, "label_smoothing": 0.0, "head_depth": 1,
             "layers_copied": 4, "hp_lr": 0.05, "ft_lr": ft_lr}
    attrs.update(extra)
    return attrs


def objective_of(energy: float) -> float:
    """The synthetic truth: accuracy peaks at energy 0.5 and falls off fast on both sides."""
    return 0.9 - 2.0 * (energy - 0.5) ** 2


def history(n: int, seed: int = 0) -> list[optuna.trial.FrozenTrial]:
    rng = np.random.default_rng(seed)
    trials = []
    for energy in np.linspace(0.05, 0.95, n):
        ft_lr = float(10 ** rng.uniform(-3, -1))
        attrs = signals(float(energy), ft_lr)
        attrs["hp_train_acc"] = float(rng.uniform(0.6, 0.9))  # an uninformative signal
        trials.append(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=objective_of(float(energy)), user_attrs=attrs))
    return trials


def study_with(pruner: EnergyPruner, n_history: int) -> optuna.Study:
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for t in history(n_history):
        study.add_trial(t)
    return study


def run_gated(study: optuna.Study, attrs: dict, ft_epochs: int = 2) -> optuna.trial.FrozenTrial:
    """One trial: set the HP attrs, pass the gate, 'finetune' (report ft_epochs steps)."""

    def objective(trial: optuna.Trial) -> float:
        set_attrs(trial, attrs)
        gate(trial)
        for epoch in range(1, ft_epochs + 1):
            trial.report(0.5, epoch)
        set_attrs(trial, {"ft_epochs_run": ft_epochs})
        return 0.5

    study.optimize(objective, n_trials=1, catch=(InvalidSignalError,))
    return study.trials[-1]


def test_hopeless_trial_is_pruned_before_ft_with_its_decision_recorded() -> None:
    pruner = EnergyPruner(n_startup_trials=5)
    study = study_with(pruner, 12)
    trial = run_gated(study, signals(0.93))  # the worst corner of the history

    assert trial.state == TrialState.PRUNED
    a = trial.user_attrs
    assert a["gate_decision"] == "prune" and a["pruned_at"] == "gate" and a["ft_epochs_run"] == 0
    assert trial.intermediate_values == {}
    assert a["gate_bound"] < a["gate_threshold"] == pytest.approx(max(t.value for t in
                                                                       history(12)))
    assert a["gate_predicted_objective"] < 0.65 and a["gate_predicted_std"] > 0
    assert a["gate_history_trials"] == 12
    assert a["prune_reason"] == a["gate_reason"] and "cannot reach" in a["prune_reason"]
    assert a["energy"] == 0.93  # the HP metrics stay on the pruned trial
    assert pruner.take_decision(trial.number) is None  # handed over once, not kept


def test_promising_trial_is_kept_and_its_decision_recorded() -> None:
    study = study_with(EnergyPruner(n_startup_trials=5), 12)
    trial = run_gated(study, signals(0.5))

    assert trial.state == TrialState.COMPLETE
    a = trial.user_attrs
    assert a["gate_decision"] == "keep" and "may reach" in a["gate_reason"]
    assert a["gate_bound"] >= a["gate_threshold"]
    assert abs(a["gate_predicted_objective"] - objective_of(0.5)) < 0.05
    assert "prune_reason" not in a and len(trial.intermediate_values) == 2


def test_larger_kappa_and_top_k_prune_less() -> None:
    """The knobs move the decision the documented way, on the same borderline trial."""
    borderline = signals(0.75)  # predicted ~0.78 against a best of ~0.9
    pruned = run_gated(study_with(EnergyPruner(n_startup_trials=5, kappa=0.0), 12), borderline)
    kept_wide = run_gated(study_with(EnergyPruner(n_startup_trials=5, kappa=50.0), 12),
                          borderline)
    assert pruned.state == TrialState.PRUNED
    assert kept_wide.state == TrialState.COMPLETE


def test_min_std_floors_the_prediction_std() -> None:
    """A floor of 0.2 (20 points) makes even the worst corner look reachable: kept."""
    study = study_with(EnergyPruner(n_startup_trials=5, min_std=0.2), 12)
    trial = run_gated(study, signals(0.93))
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["gate_predicted_std"] == 0.2


def test_nothing_is_pruned_during_startup() -> None:
    pruner = EnergyPruner(n_startup_trials=5)
    study = study_with(pruner, 4)  # one short of the startup count
    trial = run_gated(study, signals(0.93))
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["gate_decision"] == "keep"
    assert trial.user_attrs["gate_reason"].startswith("startup: 4 of 5")
    assert "gate_bound" not in trial.user_attrs

    # From an empty study, run trials of all kinds: none is pruned before 5 completed.
    study = optuna.create_study(direction="maximize", pruner=EnergyPruner(n_startup_trials=5))
    states = [run_gated(study, signals(e)).state for e in (0.9, 0.1, 0.95, 0.05, 0.92)]
    assert states == [TrialState.COMPLETE] * 5


@pytest.mark.parametrize("bad", [{"energy": math.nan}, {"energy": math.inf},
                                 {"hp_train_loss": math.nan}, {"head_norm": None}])
def test_non_finite_signal_fails_the_trial_with_its_reason_and_the_study_goes_on(bad) -> None:
    study = study_with(EnergyPruner(n_startup_trials=5), 12)
    attrs = {**signals(0.5), **bad}
    if bad.get("head_norm", 0) is None:
        del attrs["head_norm"]
    trial = run_gated(study, attrs)

    assert trial.state == TrialState.FAIL
    name = next(iter(bad))
    assert trial.user_attrs["gate_decision"] == "fail"
    reason = trial.user_attrs["fail_reason"]
    assert name in reason and "not finite" in reason
    assert "ft_epochs_run" not in trial.user_attrs and trial.intermediate_values == {}
    assert run_gated(study, signals(0.5)).state == TrialState.COMPLETE  # the study continues


def test_nan_energy_fails_even_during_startup() -> None:
    study = optuna.create_study(direction="maximize", pruner=EnergyPruner(n_startup_trials=5))
    assert run_gated(study, signals(math.nan)).state == TrialState.FAIL


def test_band_prunes_out_of_band_trials_from_the_first_trial() -> None:
    pruner = EnergyPruner(n_startup_trials=5, energy_min=0.2, energy_max=0.8)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    low, high, inside = (run_gated(study, signals(e)) for e in (0.1, 0.9, 0.5))

    assert low.state == high.state == TrialState.PRUNED
    assert "energy_min" in low.user_attrs["prune_reason"]
    assert "energy_max" in high.user_attrs["prune_reason"]
    assert low.user_attrs["ft_epochs_run"] == 0 and low.intermediate_values == {}
    assert inside.state == TrialState.COMPLETE
    assert inside.user_attrs["gate_reason"].startswith("startup")


def test_ft_epochs_are_judged_by_the_wrapped_pruner() -> None:
    pruner = EnergyPruner(optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
                          n_startup_trials=2)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for t in history(6):
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=t.value, user_attrs=t.user_attrs,
            intermediate_values={1: 0.9, 2: 0.9}))

    def objective(trial: optuna.Trial) -> float:
        set_attrs(trial, signals(0.5))
        gate(trial)  # kept: promising
        trial.report(0.1, 1)  # far below the median of earlier trials at step 1
        if trial.should_prune():
            raise optuna.TrialPruned()
        return 0.1

    study.optimize(objective, n_trials=1)
    trial = study.trials[-1]
    assert trial.user_attrs["gate_decision"] == "keep"
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]


def test_wrapped_hyperband_runs_and_the_gate_ignores_it() -> None:
    pruner = EnergyPruner(optuna.pruners.HyperbandPruner(min_resource=1, max_resource=4),
                          n_startup_trials=3)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for energy in (0.5, 0.3, 0.7, 0.45):
        trial = run_gated(study, signals(energy), ft_epochs=4)
        assert trial.user_attrs["gate_decision"] in ("keep", "prune")
    assert study.best_trial.state == TrialState.COMPLETE


def test_minimized_objective_uses_the_lower_bound() -> None:
    study = optuna.create_study(direction="minimize", pruner=EnergyPruner(n_startup_trials=5))
    for t in history(12):
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=-t.value,
                                                  user_attrs=t.user_attrs))
    decision = study.pruner.decide(study, optuna.trial.create_trial(
        state=TrialState.RUNNING, user_attrs=signals(0.93)))
    assert decision.prune and decision.bound > decision.threshold
    assert decision.threshold == pytest.approx(-max(t.value for t in history(12)))


@pytest.mark.parametrize("kwargs", [dict(n_startup_trials=1), dict(top_k=6), dict(kappa=-1.0), dict(min_std=-0.1),
                                    dict(energy_min=0.5, energy_max=0.5),
                                    dict(energy_max=math.nan), dict(signals=("energy", "nope")),
                                    dict(signals=())])
def test_constructor_rejects_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        EnergyPruner(**{"n_startup_trials": 5, **kwargs})


def test_config_builds_the_composed_pruner() -> None:
    cfg = compose_config(["pruner=energy", "pruner.ft=median", "pruner.kappa=1.5",
                          "pruner.min_std=0.02",
                          "pruner.energy_max=0.9", "pruner.signals=[energy,ft_lr]"])
    pruner = make_pruner(cfg)
    assert isinstance(pruner, EnergyPruner)
    assert isinstance(pruner._ft_pruner, optuna.pruners.MedianPruner)
    assert pruner._kappa == 1.5 and pruner._energy_max == 0.9 and pruner._min_std == 0.02
    assert pruner._signals == ("energy", "ft_lr")
    plain = make_pruner(compose_config(["pruner=energy"]))
    assert isinstance(plain._ft_pruner, optuna.pruners.NopPruner)


@pytest.mark.parametrize("override, key", [
    ("pruner.top_k=0", "pruner.top_k"), ("pruner.kappa=-1", "pruner.kappa"),
    ("pruner.min_std=-0.5", "pruner.min_std"),
    ("pruner.n_startup_trials=1", "pruner.n_startup_trials"), ("pruner.ft=energy", "pruner.ft"),
    ("pruner.signals=[energy,bogus]", "pruner.signals"),
    ("pruner.energy_min=2", "pruner.energy_min"),  # with energy_max=1 below
])
def test_config_errors_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose_config(["pruner=energy", "pruner.energy_max=1", override])
