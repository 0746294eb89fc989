"""The running estimate of the bound's constant c and the energy-adaptation rank correlation."""
from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from hpsearch.bound import average_ranks, bound_estimate, record_bound_estimate, spearman


def done(energy: float, adaptation: float) -> optuna.trial.FrozenTrial:
    return create_trial(state=TrialState.COMPLETE, value=0.5,
                        user_attrs={"energy": energy, "adaptation_l2": adaptation})


def test_spearman_with_ties_and_degenerate_samples() -> None:
    assert list(average_ranks(__import__("numpy").array([3.0, 1.0, 3.0, 2.0]))) == [2.5, 0, 2.5, 1]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_estimate_skips_trials_that_cannot_measure_the_ratio() -> None:
    trials = [done(0.5, 1.0), done(0.2, 0.9), done(0.8, 1.2), done(0.0, 1.0),
              done(math.nan, 1.0), create_trial(state=TrialState.PRUNED,
                                                user_attrs={"energy": 0.01}),
              create_trial(state=TrialState.COMPLETE, value=0.1, user_attrs={"energy": 0.3})]
    est = bound_estimate(trials)
    assert est.n_trials == 3
    assert est.c_hat == pytest.approx(0.9 / 0.2) and est.c_hat_trial == trials[1].number
    assert est.spearman == pytest.approx(1.0)
    assert bound_estimate([]).c_hat is None


def test_callback_records_study_attrs_after_each_completed_trial() -> None:
    study = optuna.create_study(direction="maximize")
    pairs = iter([(0.5, 1.0), (0.25, 1.0), (0.4, 0.4)])

    def objective(trial: optuna.Trial) -> float:
        energy, adaptation = next(pairs)
        trial.set_user_attr("energy", energy)
        trial.set_user_attr("adaptation_l2", adaptation)
        return 0.5

    study.optimize(objective, n_trials=1, callbacks=[record_bound_estimate])
    assert study.user_attrs["bound_c_hat"] == pytest.approx(2.0)
    assert study.user_attrs["bound_spearman_energy_adaptation"] is None  # one trial
    study.optimize(objective, n_trials=2, callbacks=[record_bound_estimate])
    assert study.user_attrs["bound_c_hat"] == pytest.approx(4.0)
    assert study.user_attrs["bound_c_hat_trial"] == 1
    assert study.user_attrs["bound_trials"] == 3
    assert study.user_attrs["bound_spearman_energy_adaptation"] == pytest.approx(0.0, abs=1e-9)
