"""The energy pruner's one model, asked at the gate and after every FT epoch, on synthetic
histories; and its priors (normalised per study, weighted by how they rank this study)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.pruners import EnergyPruner
from hpsearch.pruners._outcome import Query
from hpsearch.trial import set_attrs
from hpsearch.trial.gate import gate, judge_epoch

optuna.logging.set_verbosity(optuna.logging.ERROR)

EPOCHS = 4


def attrs(quality: float, i: int = 0) -> dict:
    """HP signals of a trial of this quality (0..1): the HP accuracy and energy follow it, the
    rest is noise that does not."""
    rng = np.random.default_rng(i)
    return {
        "energy": 0.2 + 0.5 * quality,
        "hp_train_acc": float(rng.uniform(0.6, 0.9)),
        "hp_train_loss": 2.0 - quality,
        "hp_val_acc": 0.25 + 0.6 * quality,
        "head_norm": 3.0,
        "layers_copied": 1 + i % 3,
        "ft_lr": float(10 ** rng.uniform(-3, -1)),
    }


def curve(quality: float, shift: float = 0.0) -> list[float]:
    """FT accuracy after each epoch: rises to ``0.3 + 0.6 * quality`` (+ ``shift``)."""
    final = 0.3 + 0.6 * quality + shift
    return [final - 0.2 * (1 - quality) * (EPOCHS - e) / EPOCHS for e in range(1, EPOCHS + 1)]


def completed(
    quality: float, i: int, shift: float = 0.0, reverse: bool = False, flat: bool = False
):
    """A completed trial; ``flat``: with the same HP signals as every other flat one."""
    c = curve(1.0 - quality if reverse else quality, shift)
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        value=c[-1],
        user_attrs=attrs(0.5) if flat else attrs(quality, i),
        intermediate_values={e + 1: v for e, v in enumerate(c)},
    )


def qualities(n: int) -> list[float]:
    return [((i * 37) % n) / (n - 1) for i in range(n)]


def study_with(pruner: EnergyPruner, n: int, flat: bool = False) -> optuna.Study:
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for i, q in enumerate(qualities(n)):
        study.add_trial(completed(q, i, flat=flat))
    return study


def run(study: optuna.Study, hp: dict, accs: list[float]) -> optuna.trial.FrozenTrial:
    """One trial through the live gate and FT-epoch calls."""

    def objective(trial: optuna.Trial) -> float:
        set_attrs(trial, hp)
        gate(trial)
        for epoch, acc in enumerate(accs, start=1):
            judge_epoch(trial, epoch, acc, accs[:epoch])
        return accs[-1]

    study.optimize(objective, n_trials=1)
    return study.trials[-1]


def pruner(**kwargs) -> EnergyPruner:
    return EnergyPruner(**{"n_startup_trials": 5, "ft_epochs": EPOCHS, **kwargs})


def test_the_model_closes_at_the_gate_or_at_the_first_epoch_that_shows_a_trial_is_hopeless():
    study = study_with(pruner(min_prob=0.01), 16)
    bad = run(study, attrs(0.05, 99), curve(0.05))
    assert bad.state == TrialState.PRUNED and bad.user_attrs["pruned_at"] == "gate"
    good = run(study, attrs(1.0, 97), curve(1.0))
    assert good.state == TrialState.COMPLETE and good.user_attrs["gate_decision"] == "keep"
    # HP signals that say nothing (the same for every trial): the gate keeps, and the first
    # FT epoch judges by the curve
    flat = study_with(pruner(min_prob=0.01), 16, flat=True)
    slow = run(flat, attrs(0.5), curve(0.1))
    assert slow.user_attrs["gate_decision"] == "keep"
    assert slow.state == TrialState.PRUNED and slow.user_attrs["pruned_at"] == "ft_epoch_1"
    assert run(flat, attrs(0.5), curve(1.0)).state == TrialState.COMPLETE


def test_the_last_epoch_is_never_pruned_it_saves_nothing() -> None:
    study = study_with(pruner(min_prob=0.5), 16)
    p = study.pruner
    trial = optuna.trial.create_trial(
        state=TrialState.RUNNING,
        user_attrs=attrs(0.9, 5),
        intermediate_values={e: 0.0 for e in range(1, EPOCHS + 1)},
    )
    assert p.prune(study, trial) is False
    assert p._step_min_prob(EPOCHS) == 0 and p._step_min_prob(0) == 0.5


def test_a_trial_above_every_one_seen_stays_open_in_ft() -> None:
    """An FT accuracy far above every trial's: it ranks first among all that reached the epoch
    and is kept at a min_prob that prunes a hopeless one there."""
    study = study_with(pruner(min_prob=0.01), 16)
    far = run(study, attrs(1.0, 50), [25.0] * EPOCHS)
    assert far.state == TrialState.COMPLETE


def test_a_trial_below_every_one_seen_is_judged_by_the_fitted_line() -> None:
    """The completed trials are the survivors; a trial worse than any of them at an FT epoch is
    ranked among all that reached it and extrapolated along the fit: pruned, not kept as
    unknown."""
    study = study_with(pruner(min_prob=0.01), 16, flat=True)
    low = run(study, attrs(0.5), [0.01] * EPOCHS)
    assert low.state == TrialState.PRUNED and low.user_attrs["pruned_at"] == "ft_epoch_1"


def test_decisions_are_deterministic() -> None:
    def probability(accuracy: float) -> float:
        study = study_with(pruner(), 12)
        model = study.pruner._outcome(study)
        rows = study.pruner._rows(study.trials[:1], 1.0)
        query = Query(rows.signals[0], rows.curve_signals[0], 1, accuracy)
        return model.predict(query).probability

    assert probability(0.5) == probability(0.5)
    assert probability(0.4) < probability(0.8)


def _prior(n: int, shift: float = 0.0, reverse: bool = False) -> tuple:
    return tuple(completed(q, 100 + i, shift, reverse) for i, q in enumerate(qualities(n)))


def _current(p: EnergyPruner, n: int) -> optuna.Study:
    study = optuna.create_study(direction="maximize", pruner=p)
    for i, q in enumerate(qualities(n)[:n]):
        study.add_trial(completed(0.3 + 0.4 * q, i))  # this study saw only the middle
    return study


def test_a_good_prior_decides_from_the_first_trial() -> None:
    alone = optuna.create_study(direction="maximize", pruner=pruner(min_prob=0.05))
    assert run(alone, attrs(0.02, 7), curve(0.02)).state == TrialState.COMPLETE  # startup
    with_prior = optuna.create_study(
        direction="maximize", pruner=pruner(min_prob=0.05, prior_trials={"earlier": _prior(30)})
    )
    first = run(with_prior, attrs(0.02, 7), curve(0.02))
    assert first.state == TrialState.PRUNED and first.user_attrs["pruned_at"] == "gate"
    assert first.user_attrs["gate_prior_weight"] == 1.0
    assert first.user_attrs["gate_prior_trials"] == 30


def test_a_prior_from_a_task_with_shifted_accuracies_does_not_switch_the_gate_off() -> None:
    """The earlier task scores 20 points higher everywhere: pooled with this study's trials it
    would rank all of them at the bottom; on its own ranks it agrees with this study, keeps
    its weight, and the gate still prunes the hopeless trial and keeps the good one."""
    p = pruner(min_prob=0.05, prior_trials={"easier": _prior(30, shift=0.2)})
    study = _current(p, 8)
    decide = p.decide
    hopeless = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=attrs(0.02, 3))
    good = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=attrs(0.98, 4))
    assert decide(study, hopeless).prune
    kept = decide(study, good)
    assert not kept.prune and kept.probability > 0.3
    assert kept.prior_weight is not None and kept.prior_weight > 0.3


def test_a_misleading_prior_is_down_weighted() -> None:
    """A prior whose ranks are the reverse of this study's gets no weight: the decisions are
    this study's own model's."""
    misleading = pruner(min_prob=0.05, prior_trials={"reversed": _prior(30, reverse=True)})
    alone = pruner(min_prob=0.05)
    trial = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=attrs(0.5, 3))
    with_prior = misleading.decide(_current(misleading, 12), trial)
    without = alone.decide(_current(alone, 12), trial)
    assert with_prior.prior_weight == pytest.approx(0.0)
    assert with_prior.probability == pytest.approx(without.probability)
