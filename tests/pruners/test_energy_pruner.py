"""The energy pruner on synthetic trial histories, through the real gate (``trial.gate``)."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.app import compose_config
from hpsearch.errors import ConfigError
from hpsearch.pruners import GATE_SIGNALS, EnergyPruner, InvalidSignalError
from hpsearch.study.pruning import make_pruner
from hpsearch.trial import set_attrs
from hpsearch.trial.gate import gate

optuna.logging.set_verbosity(optuna.logging.ERROR)


def signals(energy: float, ft_lr: float = 0.01, **extra: float) -> dict:
    """HP-phase user attrs of a trial; everything but energy and ft_lr is fixed noise-free."""
    attrs = {
        "energy": energy,
        "hp_train_acc": 0.8,
        "hp_train_loss": 0.6,
        "hp_val_acc": 0.75,
        "head_norm": 3.0,
        "tau": 4,
        "label_smoothing": 0.0,
        "head_depth": 1,
        "layers_copied": 4,
        "hp_lr": 0.05,
        "ft_lr": ft_lr,
    }
    attrs.update(extra)
    return attrs


def gate_pruner(ft_pruner=None, **kwargs) -> EnergyPruner:
    """The gate with top_k 1 and min_prob 0.003 (its settings before the one model's defaults):
    the decisions these tests were written for."""
    return EnergyPruner(ft_pruner, **{"top_k": 1, "min_prob": 0.003, **kwargs})


def objective_of(energy: float) -> float:
    """The synthetic truth: accuracy falls, faster and faster, with the energy over 0.05-0.95
    (the model is linear in ranks: it sees an order, not a curve's shape)."""
    return 0.9 - 0.6 * (energy - 0.05) ** 2


def history(n: int, seed: int = 0) -> list[optuna.trial.FrozenTrial]:
    rng = np.random.default_rng(seed)
    trials = []
    for energy in np.linspace(0.05, 0.95, n):
        ft_lr = float(10 ** rng.uniform(-3, -1))
        attrs = signals(float(energy), ft_lr)
        attrs["hp_train_acc"] = float(rng.uniform(0.6, 0.9))  # an uninformative signal
        trials.append(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE, value=objective_of(float(energy)), user_attrs=attrs
            )
        )
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
    pruner = gate_pruner(n_startup_trials=5)
    study = study_with(pruner, 12)
    trial = run_gated(study, signals(0.93))  # the worst corner of the history

    assert trial.state == TrialState.PRUNED
    a = trial.user_attrs
    assert a["gate_decision"] == "prune" and a["pruned_at"] == "gate" and a["ft_epochs_run"] == 0
    assert trial.intermediate_values == {}
    assert a["gate_probability"] < 0.003  # pruner.min_prob's default
    assert a["gate_threshold"] == pytest.approx(max(t.value for t in history(12)))
    assert a["gate_predicted_objective"] < 0.65 and a["gate_predicted_std"] > 0
    assert a["gate_predicted_score"] < -0.8  # among the worst ranks (of 12: -1.73 .. 1.73)
    assert a["gate_history_trials"] == 12
    assert a["prune_reason"] == a["gate_reason"] and "unlikely to reach" in a["prune_reason"]
    assert a["energy"] == 0.93  # the HP metrics stay on the pruned trial
    assert pruner.take_decision(trial.number) is None  # handed over once, not kept


def test_promising_trial_is_kept_and_its_decision_recorded() -> None:
    study = study_with(gate_pruner(n_startup_trials=5), 12)
    trial = run_gated(study, signals(0.05))

    assert trial.state == TrialState.COMPLETE
    a = trial.user_attrs
    assert a["gate_decision"] == "keep" and "may reach" in a["gate_reason"]
    assert a["gate_probability"] >= 0.003
    assert abs(a["gate_predicted_objective"] - objective_of(0.05)) < 0.05
    assert "prune_reason" not in a and len(trial.intermediate_values) == 2


def test_smaller_min_prob_and_larger_top_k_prune_less() -> None:
    """The knobs move the decision the documented way, on the same borderline trial."""
    borderline = signals(0.1)  # ranked second against the best of 12
    probability = (
        gate_pruner(n_startup_trials=5)
        .decide(
            study_with(gate_pruner(n_startup_trials=5), 12),
            optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=borderline),
        )
        .probability
    )
    assert 1e-6 < probability < 0.5
    strict = gate_pruner(n_startup_trials=5, min_prob=min(0.9, probability * 2))
    lenient = gate_pruner(n_startup_trials=5, min_prob=probability / 2)
    assert run_gated(study_with(strict, 12), borderline).state == TrialState.PRUNED
    assert run_gated(study_with(lenient, 12), borderline).state == TrialState.COMPLETE
    wide = gate_pruner(n_startup_trials=5, top_k=5, min_prob=min(0.9, probability * 2))
    kept = run_gated(study_with(wide, 12), borderline)
    assert kept.state == TrialState.COMPLETE
    assert kept.user_attrs["gate_probability"] > probability  # the 5th best is easier to beat


def test_the_gate_closes_on_the_bad_region_and_keeps_the_good_one() -> None:
    """20 completed trials are enough for the gate to prune every trial far from the best
    energy and keep those at it; the decision is a function of the history (a fresh pruner
    agrees)."""
    study = study_with(gate_pruner(n_startup_trials=5), 20)
    decisions = {}
    for energy in np.linspace(0.05, 0.95, 19):
        trial = optuna.trial.create_trial(
            state=TrialState.RUNNING, user_attrs=signals(float(energy))
        )
        decisions[round(float(energy), 3)] = gate_pruner(n_startup_trials=5).decide(study, trial)
        assert study.pruner.decide(study, trial) == decisions[round(float(energy), 3)]
    for energy, decision in decisions.items():
        if energy >= 0.4:  # 7+ points below the best
            assert decision.prune, (energy, decision.reason)
        if energy <= 0.05:
            assert not decision.prune, (energy, decision.reason)


def test_a_trial_unlike_any_seen_stays_open() -> None:
    """Every completed trial had the same FT learning rate: the model knows nothing of another
    one (its slope keeps the prior's spread), so a trial at the bad energy edge with a new FT
    learning rate is kept, while the same trial with the learning rate seen is pruned."""
    study = optuna.create_study(direction="maximize", pruner=gate_pruner(n_startup_trials=5))
    for energy in np.linspace(0.05, 0.95, 20):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                value=objective_of(float(energy)),
                user_attrs=signals(float(energy), ft_lr=0.01),
            )
        )
    far = gate_pruner(n_startup_trials=5).decide(
        study, optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=signals(0.9, 0.1))
    )
    seen = gate_pruner(n_startup_trials=5).decide(
        study, optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=signals(0.9, 0.01))
    )
    assert not far.prune and far.probability > 0.003
    assert far.predicted_std > 1.0 > seen.predicted_std
    assert seen.prune


def test_nothing_is_pruned_during_startup() -> None:
    pruner = gate_pruner(n_startup_trials=5)
    study = study_with(pruner, 4)  # one short of the startup count
    trial = run_gated(study, signals(0.93))
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["gate_decision"] == "keep"
    assert trial.user_attrs["gate_reason"].startswith("startup: 4 of 5")
    assert "gate_probability" not in trial.user_attrs

    # From an empty study, run trials of all kinds: none is pruned before 5 completed.
    study = optuna.create_study(direction="maximize", pruner=gate_pruner(n_startup_trials=5))
    states = [run_gated(study, signals(e)).state for e in (0.9, 0.1, 0.95, 0.05, 0.92)]
    assert states == [TrialState.COMPLETE] * 5


@pytest.mark.parametrize(
    "bad",
    [{"energy": math.nan}, {"energy": math.inf}, {"hp_train_loss": math.nan}, {"ft_lr": None}],
)
def test_non_finite_signal_fails_the_trial_with_its_reason_and_the_study_goes_on(bad) -> None:
    study = study_with(gate_pruner(n_startup_trials=5), 12)
    attrs = {**signals(0.5), **bad}
    if bad.get("ft_lr", 0) is None:  # missing
        del attrs["ft_lr"]
    trial = run_gated(study, attrs)

    assert trial.state == TrialState.FAIL
    name = next(iter(bad))
    assert trial.user_attrs["gate_decision"] == "fail"
    reason = trial.user_attrs["fail_reason"]
    assert name in reason and "not finite" in reason
    assert "ft_epochs_run" not in trial.user_attrs and trial.intermediate_values == {}
    assert run_gated(study, signals(0.05)).state == TrialState.COMPLETE  # the study continues


def test_nan_energy_fails_even_during_startup() -> None:
    study = optuna.create_study(direction="maximize", pruner=gate_pruner(n_startup_trials=5))
    assert run_gated(study, signals(math.nan)).state == TrialState.FAIL


def test_band_prunes_out_of_band_trials_from_the_first_trial() -> None:
    pruner = gate_pruner(n_startup_trials=5, energy_min=0.2, energy_max=0.8)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    low, high, inside = (run_gated(study, signals(e)) for e in (0.1, 0.9, 0.5))

    assert low.state == high.state == TrialState.PRUNED
    assert "energy_min" in low.user_attrs["prune_reason"]
    assert "energy_max" in high.user_attrs["prune_reason"]
    assert low.user_attrs["ft_epochs_run"] == 0 and low.intermediate_values == {}
    assert inside.state == TrialState.COMPLETE
    assert inside.user_attrs["gate_reason"].startswith("startup")


def test_ft_epochs_are_judged_by_the_wrapped_pruner() -> None:
    pruner = gate_pruner(
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0), n_startup_trials=2
    )
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for t in history(6):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                value=t.value,
                user_attrs=t.user_attrs,
                intermediate_values={1: 0.9, 2: 0.9},
            )
        )

    def objective(trial: optuna.Trial) -> float:
        set_attrs(trial, signals(0.05))
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
    pruner = gate_pruner(
        optuna.pruners.HyperbandPruner(min_resource=1, max_resource=4), n_startup_trials=3
    )
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for energy in (0.5, 0.3, 0.7, 0.45):
        trial = run_gated(study, signals(energy), ft_epochs=4)
        assert trial.user_attrs["gate_decision"] in ("keep", "prune")
    assert study.best_trial.state == TrialState.COMPLETE


def test_minimized_objective_is_ranked_the_other_way() -> None:
    study = optuna.create_study(direction="minimize", pruner=gate_pruner(n_startup_trials=5))
    for t in history(12):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE, value=-t.value, user_attrs=t.user_attrs
            )
        )
    decision = study.pruner.decide(
        study, optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=signals(0.93))
    )
    assert decision.prune and decision.probability < 0.003
    assert decision.threshold == pytest.approx(-max(t.value for t in history(12)))
    assert decision.predicted > decision.threshold  # a worse (larger) objective predicted
    good = study.pruner.decide(
        study, optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=signals(0.05))
    )
    assert not good.prune and good.predicted < -0.85


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n_startup_trials=1),
        dict(top_k=6),
        dict(min_prob=0.0),
        dict(min_prob=1.0),
        dict(min_prob=math.nan),
        dict(energy_min=0.5, energy_max=0.5),
        dict(energy_max=math.nan),
        dict(signals=("energy", "nope")),
        dict(signals=()),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        EnergyPruner(**{"n_startup_trials": 5, **kwargs})


def test_config_builds_the_composed_pruner() -> None:
    cfg = compose_config(
        [
            "pruner=energy",
            "pruner.ft=median",
            "pruner.min_prob=0.05",
            "pruner.energy_max=0.9",
            "pruner.signals=[energy,ft_lr]",
        ]
    )
    pruner = make_pruner(cfg)
    assert isinstance(pruner, EnergyPruner)
    assert isinstance(pruner._ft_pruner, optuna.pruners.MedianPruner)
    assert pruner._min_prob == 0.05 and pruner._energy_max == 0.9
    assert pruner._signals == ("energy", "ft_lr")
    plain = make_pruner(compose_config(["pruner=energy", "ft.epochs=6"]))
    assert plain._ft_pruner is None and plain._ft_epochs == 6  # its own model judges FT
    assert plain._signals == GATE_SIGNALS and (plain._min_prob, plain._top_k) == (0.05, 3)


@pytest.mark.parametrize(
    "override, key",
    [
        ("pruner.top_k=0", "pruner.top_k"),
        ("pruner.min_prob=0", "pruner.min_prob"),
        ("pruner.min_prob=1.5", "pruner.min_prob"),
        ("pruner.n_startup_trials=1", "pruner.n_startup_trials"),
        ("pruner.ft=energy", "pruner.ft"),
        ("pruner.signals=[energy,bogus]", "pruner.signals"),
        ("pruner.energy_min=2", "pruner.energy_min"),  # with energy_max=1 below
    ],
)
def test_config_errors_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose_config(["pruner=energy", "pruner.energy_max=1", override])


def _current_study(pruner: EnergyPruner, energies) -> optuna.Study:
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for energy in energies:
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE, value=objective_of(energy), user_attrs=signals(energy)
            )
        )
    return study


def test_a_prior_from_earlier_studies_closes_the_gate_before_this_study_could() -> None:
    """This study has 2 completed trials, short of its 5 startup trials: alone, the gate keeps
    energy 0.9; with 20 trials of an earlier study, which saw the energy vary, the prior decides
    (alone, until this study has 3) and prunes it. The threshold stays this study's best."""
    two = (0.3, 0.5)
    candidate = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=signals(0.9))
    alone = _current_study(gate_pruner(n_startup_trials=5, min_prob=0.05), two)
    assert not alone.pruner.decide(alone, candidate).prune
    prior = {"earlier": tuple(history(20, seed=3))}
    with_prior = _current_study(
        gate_pruner(n_startup_trials=5, min_prob=0.05, prior_trials=prior), two
    )
    decision = with_prior.pruner.decide(with_prior, candidate)
    assert decision.prune and decision.prior_trials == 20 and decision.history_trials == 2
    assert decision.threshold == pytest.approx(objective_of(0.3))  # this study's best
    assert decision.user_attrs()["gate_prior_trials"] == 20
    assert decision.prior_weight == 1.0 and "prior weight" in decision.reason
    assert "gate_prior_trials" not in alone.pruner.decide(alone, candidate).user_attrs()


def _prior_storage(tmp_path, direction: str = "maximize") -> str:
    url = f"sqlite:///{tmp_path}/prior.db"
    earlier = optuna.create_study(study_name="earlier", storage=url, direction=direction)
    for t in history(8):
        earlier.add_trial(t)
    optuna.create_study(study_name="empty", storage=url, direction=direction)
    return url


def test_config_reads_the_prior_studies_from_their_storage(tmp_path) -> None:
    url = _prior_storage(tmp_path)
    cfg = compose_config(
        ["pruner=energy", "pruner.prior_studies=[earlier,empty]", f"pruner.prior_storage={url}"]
    )
    pruner = make_pruner(cfg)
    assert len(pruner._priors) == 1  # the empty study has no trial to learn from
    assert pruner._priors[0].signals.shape == (8, len(GATE_SIGNALS))
    same = compose_config(
        ["pruner=energy", "pruner.prior_studies=[earlier]", f"storage.url={url}"]
    )  # prior_storage null: storage.url
    assert make_pruner(same)._priors[0].values.shape == (8,)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no study 'nope'"),
        ("no_file", "no SQLite file"),
        ("minimized", "not a single maximised objective"),
    ],
)
def test_a_bad_prior_is_a_one_line_config_error(tmp_path, case: str, message: str) -> None:
    if case == "minimized":
        url, names = _prior_storage(tmp_path, direction="minimize"), "[earlier]"
    else:
        url = _prior_storage(tmp_path) if case == "missing" else f"sqlite:///{tmp_path}/none.db"
        names = "[nope]"
    cfg = compose_config(
        ["pruner=energy", f"pruner.prior_studies={names}", f"pruner.prior_storage={url}"]
    )
    with pytest.raises(ConfigError, match=message) as err:
        make_pruner(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "none.db").exists()  # a wrong path is not created


@pytest.mark.parametrize(
    "override", ["pruner.prior_studies=[a,a]", "pruner.prior_studies=[toy]"]
)  # the study itself
def test_prior_studies_config_errors_name_the_key(override: str) -> None:
    with pytest.raises(ConfigError, match=r"pruner\.prior_studies"):
        compose_config(["pruner=energy", "study.name=toy", override])
