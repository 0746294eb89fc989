"""The bound's constant: how far FT moved the features per unit of energy left after HP.

Ren et al. (2023) bound the feature adaptation by the energy: E||z_T - z_0|| <= c * E||e_y - q_0||.
Every completed trial measures both sides (``adaptation_l2`` and ``energy`` user attrs), so the
study can keep a running estimate c_hat = max over completed trials of adaptation_l2 / energy (the
smallest c consistent with every trial so far) and the Spearman correlation between the two.
``record_bound_estimate`` is a study callback that writes them as study user attrs
(``BOUND_ATTRS``) after each completed trial.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

BOUND_ATTRS = {
    "bound_c_hat": "max over completed trials of adaptation_l2 / energy (None before any)",
    "bound_c_hat_trial": "the trial that sets bound_c_hat",
    "bound_spearman_energy_adaptation": "Spearman rank correlation of energy and adaptation_l2 "
                                        "over completed trials (None below 3 or if constant)",
    "bound_trials": "completed trials with finite energy > 0 and adaptation_l2",
}


@dataclass(frozen=True)
class BoundEstimate:
    c_hat: float | None
    c_hat_trial: int | None
    spearman: float | None
    n_trials: int

    def study_attrs(self) -> dict[str, float | int | None]:
        return {"bound_c_hat": self.c_hat, "bound_c_hat_trial": self.c_hat_trial,
                "bound_spearman_energy_adaptation": self.spearman,
                "bound_trials": self.n_trials}


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``values``; tied values share the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    return np.bincount(group, weights=ranks)[group] / counts[group]


def spearman(a: Iterable[float], b: Iterable[float]) -> float | None:
    """Spearman's rho of two equally long samples; None below 3 points or for a constant one."""
    ra, rb = average_ranks(np.asarray(list(a), float)), average_ranks(np.asarray(list(b), float))
    if len(ra) < 3 or ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def bound_estimate(trials: Iterable[FrozenTrial]) -> BoundEstimate:
    """c_hat and Spearman's rho over the completed trials that measured both sides."""
    pairs = []
    for t in trials:
        energy, adapt = t.user_attrs.get("energy"), t.user_attrs.get("adaptation_l2")
        if (t.state == TrialState.COMPLETE and isinstance(energy, (int, float))
                and isinstance(adapt, (int, float)) and math.isfinite(energy) and energy > 0
                and math.isfinite(adapt)):
            pairs.append((t.number, float(energy), float(adapt)))
    if not pairs:
        return BoundEstimate(None, None, None, 0)
    number, energy, adapt = max(pairs, key=lambda p: p[2] / p[1])
    return BoundEstimate(adapt / energy, number, spearman([p[1] for p in pairs],
                                                          [p[2] for p in pairs]), len(pairs))


def record_bound_estimate(study: optuna.Study, trial: FrozenTrial) -> None:
    """Study callback: after a completed trial, refresh the ``BOUND_ATTRS`` study user attrs."""
    if trial.state != TrialState.COMPLETE:
        return
    estimate = bound_estimate(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    for key, value in estimate.study_attrs().items():
        study.set_user_attr(key, value)
