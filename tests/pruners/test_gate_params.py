"""The gate reads searched categorical parameters (the backbone): each choice encoded by how the
completed trials that made it ended."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from hpsearch.pruners import EnergyPruner
from hpsearch.pruners._linear import normal_scores
from hpsearch.pruners._outcome import choice_columns
from hpsearch.trial import set_attrs
from hpsearch.trial.gate import gate

optuna.logging.set_verbosity(optuna.logging.ERROR)

PARAM = "backbone.name"
CHOICES = ("good", "bad", "new")
# HP signals that say nothing: the same for every trial
FLAT = {"energy": 0.5, "hp_val_acc": 0.6, "ft_lr": 0.01}


def test_each_choice_is_the_mean_score_of_the_other_completed_trials_that_made_it() -> None:
    values = np.array([0.9, 0.7, 0.1, math.nan, 0.3, 0.5])
    choices = [("a",), ("a",), ("b",), ("a",), ("b",), ("c",)]
    columns, means = choice_columns(choices, values, 1)
    s = dict(zip([0, 1, 2, 4, 5], normal_scores(values[np.isfinite(values)])))
    # a completed trial: the others of its choice (never itself); a pruned one: all of them;
    # a choice no other completed trial made: 0, the mean of all
    assert columns[:, 0] == pytest.approx([s[1], s[0], s[4], (s[0] + s[1]) / 2, s[2], 0.0])
    assert means[0] == pytest.approx({"a": (s[0] + s[1]) / 2, "b": (s[2] + s[4]) / 2, "c": s[5]})
    # a trial without the parameter, and no parameter at all
    assert choice_columns([(None,), ("a",)], np.array([0.5, 0.6]), 1)[0][:, 0].tolist() == [0, 0]
    empty, none = choice_columns([(), ()], np.array([0.5, 0.6]), 0)
    assert empty.shape == (2, 0) and none == ()


def study_of(pruner: EnergyPruner, searched: bool) -> optuna.Study:
    """20 completed trials with flat HP signals; when ``searched``, the 'good' backbone's end at
    0.7-0.9 and the 'bad' one's at 0.2-0.4, else they end anywhere in 0.2-0.9."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for i in range(20):
        good = i % 2 == 0
        value = (0.7 if good else 0.2) + 0.02 * (i // 2)
        params = {PARAM: "good" if good else "bad"} if searched else {}
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                value=value,
                params=params,
                distributions={PARAM: CategoricalDistribution(CHOICES)} if searched else {},
                user_attrs=FLAT,
                intermediate_values={1: value},
            )
        )
    return study


def gate_of(study: optuna.Study, backbone: str | None) -> optuna.trial.FrozenTrial:
    """A trial with the flat HP signals through the live gate, with ``backbone`` when searched."""

    def objective(trial: optuna.Trial) -> float:
        if backbone is not None:
            trial.suggest_categorical(PARAM, CHOICES)
        set_attrs(trial, FLAT)
        gate(trial)
        return 0.5

    if backbone is not None:
        study.enqueue_trial({PARAM: backbone})
    study.optimize(objective, n_trials=1)
    return study.trials[-1]


def pruner(**kwargs) -> EnergyPruner:
    """An energy pruner that reads the backbone unless ``params`` says otherwise."""
    return EnergyPruner(
        **{"n_startup_trials": 5, "min_prob": 0.01, "ft_epochs": 1, "params": (PARAM,), **kwargs}
    )


def test_the_gate_prunes_a_backbone_whose_trials_all_ended_low() -> None:
    study = study_of(pruner(), searched=True)
    bad = gate_of(study, "bad")
    assert bad.state == TrialState.PRUNED and bad.user_attrs["pruned_at"] == "gate"
    assert gate_of(study, "good").state == TrialState.COMPLETE
    # a backbone no completed trial tried: the model cannot judge it, so it is kept
    new = gate_of(study, "new")
    assert new.state == TrialState.COMPLETE
    assert new.user_attrs["gate_reason"].startswith("first of its kind: no completed trial with")
    # without the parameter (the default) the flat signals say nothing, and the same trial is kept
    blind = study_of(pruner(params=None), searched=True)
    assert blind.pruner._params == ()
    assert gate_of(blind, "bad").state == TrialState.COMPLETE


def test_a_parameter_the_study_does_not_search_changes_no_decision() -> None:
    probabilities = []
    for params in ((PARAM,), ()):
        study = study_of(pruner(params=params), searched=False)
        trial = gate_of(study, None)
        probabilities.append(trial.user_attrs["gate_probability"])
    assert probabilities[0] == pytest.approx(probabilities[1], rel=1e-9)
