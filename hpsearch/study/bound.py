"""The bound's constant, kept up to date on the study while it runs.

Ren et al. (2023) bound the feature adaptation by the energy: E||z_T - z_0|| <= c * E||e_y - q_0||.
Every completed trial measures both sides (``adaptation_l2`` and ``energy``), so the study can
carry a running estimate c_hat = max over completed trials of adaptation_l2 / energy (the smallest
c consistent with every trial so far) and the Spearman correlation between the two.
``record_bound_estimate`` is a study callback that writes them as study user attrs
(``BOUND_ATTRS``) after each completed trial, computed as the report computes them
(``hpsearch.stats.bound_stats``), so optuna-dashboard shows them during the search.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.stats import bound_stats

# study user attr -> meaning
BOUND_ATTRS = {
    "bound_c_hat": "max over completed trials of adaptation_l2 / energy (null before any)",
    "bound_c_hat_trial": "the trial that sets bound_c_hat",
    "bound_trials": "completed trials with adaptation_l2 and an energy > 0",
    "bound_spearman_energy_adaptation": "Spearman rho of energy and adaptation_l2 over completed "
    "trials (null below 2 or when one is constant)",
}


def record_bound_estimate(study: optuna.Study, trial: FrozenTrial) -> None:
    """Study callback: after a completed trial, refresh the ``BOUND_ATTRS`` study user attrs."""
    if trial.state != TrialState.COMPLETE:
        return
    stats = bound_stats(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    for key, value in (
        ("bound_c_hat", stats["c_hat"]),
        ("bound_c_hat_trial", stats["c_hat_trial"]),
        ("bound_trials", stats["n_ratio"]),
        ("bound_spearman_energy_adaptation", stats["spearman_rho"]),
    ):
        study.set_user_attr(key, value)
