"""The study's running estimate of the bound's constant c and of Spearman's rho."""

from __future__ import annotations

import optuna
import pytest

from hpsearch.study.bound import BOUND_ATTRS, record_bound_estimate


def test_callback_records_study_attrs_after_each_completed_trial() -> None:
    study = optuna.create_study(direction="maximize")
    rows = iter(
        [
            (0.5, 1.0, "ok"),
            (0.25, 1.0, "ok"),
            (0.1, 9.0, "prune"),
            (0.0, 3.0, "ok"),
            (0.4, 0.4, "ok"),
        ]
    )

    def objective(trial: optuna.Trial) -> float:
        energy, adaptation, outcome = next(rows)
        trial.set_user_attr("energy", energy)
        trial.set_user_attr("adaptation_l2", adaptation)
        if outcome == "prune":
            raise optuna.TrialPruned()
        return 0.5

    study.optimize(objective, n_trials=1, callbacks=[record_bound_estimate])
    assert study.user_attrs["bound_c_hat"] == pytest.approx(2.0)
    assert study.user_attrs["bound_spearman_energy_adaptation"] is None  # one trial
    study.optimize(objective, n_trials=2, callbacks=[record_bound_estimate])
    # the pruned trial's ratio of 90 does not count: it never finished FT
    assert study.user_attrs["bound_c_hat"] == pytest.approx(4.0)
    assert study.user_attrs["bound_c_hat_trial"] == 1
    study.optimize(objective, n_trials=2, callbacks=[record_bound_estimate])
    assert study.user_attrs["bound_trials"] == 3  # energy 0 gives no ratio
    assert study.user_attrs["bound_c_hat"] == pytest.approx(4.0)
    # ranks over (0.5, 1.0), (0.25, 1.0), (0.0, 3.0), (0.4, 0.4): energy 4,2,1,3 vs 2.5,2.5,4,1
    assert study.user_attrs["bound_spearman_energy_adaptation"] == pytest.approx(-0.632455532)
    assert set(BOUND_ATTRS) <= set(study.user_attrs)
