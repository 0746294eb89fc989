"""The quantile rules on synthetic histories, through the real gate and FT-epoch calls."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.app import compose_config
from hpsearch.errors import ConfigError
from hpsearch.pruners import GateAction, QuantileRulePruner
from hpsearch.study.pruning import make_pruner
from hpsearch.trial import set_attrs
from hpsearch.trial.gate import gate, judge_epoch

optuna.logging.set_verbosity(optuna.logging.ERROR)


def study_with(pruner, hp_accs, epoch1=None, state=TrialState.COMPLETE) -> optuna.Study:
    """Trials with these HP accuracies (and FT accuracies after epoch 1)."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for i, acc in enumerate(hp_accs):
        steps = {1: epoch1[i], 2: epoch1[i]} if epoch1 is not None else {}
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=0.5 if state == TrialState.COMPLETE else None,
                user_attrs={"hp_val_acc": acc},
                intermediate_values=steps,
            )
        )
    return study


def run(study: optuna.Study, hp_acc: float, curve=(0.5, 0.5)) -> optuna.trial.FrozenTrial:
    def objective(trial: optuna.Trial) -> float:
        set_attrs(trial, {"hp_val_acc": hp_acc})
        gate(trial)
        for epoch, acc in enumerate(curve, start=1):
            judge_epoch(trial, epoch, acc, curve[:epoch])
        return curve[-1]

    study.optimize(objective, n_trials=1)
    return study.trials[-1]


ACCS = [0.1 * i for i in range(1, 11)]  # 0.1 .. 1.0: median 0.55


def test_hp_rule_prunes_below_the_running_quantile_and_records_why() -> None:
    study = study_with(QuantileRulePruner(hp_quantile=0.5), ACCS)
    low = run(study, 0.5)
    assert low.state == TrialState.PRUNED and low.intermediate_values == {}
    a = low.user_attrs
    assert a["gate_decision"] == GateAction.PRUNE.value and a["pruned_at"] == "gate"
    assert a["gate_threshold"] == pytest.approx(0.55)
    assert "0.5-quantile 0.5500 of 10 HP accuracies" in a["gate_reason"]
    high = run(study, 0.6)
    assert high.state == TrialState.COMPLETE and high.user_attrs["gate_decision"] == "keep"


def test_hp_rule_counts_pruned_trials_as_seen() -> None:
    """Head probing ran for every trial, pruned or not: all of them make the quantile."""
    study = study_with(QuantileRulePruner(hp_quantile=0.5), ACCS, state=TrialState.PRUNED)
    assert run(study, 0.5).state == TrialState.PRUNED


def test_nothing_is_pruned_during_startup_or_without_a_finite_hp_accuracy() -> None:
    study = study_with(QuantileRulePruner(hp_quantile=0.9, n_startup_trials=5), ACCS[:4])
    trial = run(study, 0.0)
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["gate_reason"].startswith("startup: 4 of 5")
    study = study_with(QuantileRulePruner(hp_quantile=0.9), ACCS)
    assert run(study, float("nan")).state == TrialState.COMPLETE


def test_a_trial_unlike_any_seen_stays_open() -> None:
    """Above every accuracy seen, at the gate and after epoch 1, even at the 0.9 quantile."""
    pruner = QuantileRulePruner(hp_quantile=0.9, epoch_quantile=0.9)
    study = study_with(pruner, ACCS, epoch1=ACCS)
    assert run(study, 5.0, curve=(5.0, 0.0)).state == TrialState.COMPLETE


def test_epoch_rule_judges_its_epoch_only() -> None:
    pruner = QuantileRulePruner(hp_quantile=None, epoch_quantile=0.75, epoch=1)
    study = study_with(pruner, ACCS, epoch1=ACCS)  # epoch-1 accuracies 0.1 .. 1.0
    low = run(study, 1.0, curve=(0.7, 1.0))  # 0.75-quantile of 0.1..1.0 is 0.775
    assert low.state == TrialState.PRUNED
    assert low.user_attrs["pruned_at"] == "ft_epoch_1" and low.user_attrs["ft_epochs_run"] == 1
    assert "gate_decision" not in low.user_attrs  # no gate check: nothing recorded
    late = run(study, 1.0, curve=(0.8, 0.0))  # epoch 2 is never judged
    assert late.state == TrialState.COMPLETE


def test_rules_is_both_and_deterministic() -> None:
    def decide(hp_acc: float, curve) -> TrialState:
        pruner = QuantileRulePruner(hp_quantile=0.4, epoch_quantile=0.6)
        return run(study_with(pruner, ACCS, epoch1=ACCS), hp_acc, curve).state

    assert decide(0.3, (1.0, 1.0)) == TrialState.PRUNED  # gate: below 0.46
    assert decide(0.5, (0.6, 1.0)) == TrialState.PRUNED  # epoch 1: below 0.64
    assert decide(0.5, (0.7, 1.0)) == TrialState.COMPLETE
    assert {decide(0.45, (0.65, 1.0)) for _ in range(3)} == {TrialState.PRUNED}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"hp_quantile": 1.5}, "hp_quantile"),
        ({"epoch_quantile": 0.0}, "epoch_quantile"),
        ({"hp_quantile": None, "epoch_quantile": None}, "hp_quantile"),
        ({"epoch": 0}, "epoch"),
        ({"n_startup_trials": 0}, "n_startup_trials"),
    ],
)
def test_bad_arguments_are_value_errors_naming_them(kwargs, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}"):
        QuantileRulePruner(**kwargs)


def test_config_builds_each_rule_with_its_defaults() -> None:
    hp = make_pruner(compose_config(["pruner=hp_rule"]))
    assert (hp._hp_quantile, hp._epoch_quantile, hp._n_startup_trials) == (0.5, None, 5)
    ep = make_pruner(compose_config(["pruner=epoch_rule", "pruner.epoch=2"]))
    assert (ep._hp_quantile, ep._epoch_quantile, ep._epoch) == (None, 0.75, 2)
    both = make_pruner(compose_config(["pruner=rules", "pruner.epoch_quantile=0.8"]))
    assert (both._hp_quantile, both._epoch_quantile) == (0.4, 0.8)


@pytest.mark.parametrize(
    "override, key",
    [("pruner.hp_quantile=1.2", "pruner.hp_quantile"), ("pruner.epoch=0", "pruner.epoch")],
)
def test_a_bad_rule_setting_is_a_one_line_config_error(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        compose_config(["pruner=rules", override])
    assert "\n" not in str(err.value)
