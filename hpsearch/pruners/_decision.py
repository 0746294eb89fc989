"""What a pruner decided for a trial at the gate between head probing and finetuning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A gate decision's action.
KEEP, PRUNE, FAIL = "keep", "prune", "fail"

# The user attrs a gate decision writes on its trial, and what they mean.
DECISION_ATTRS = {
    "gate_decision": "the energy pruner's decision at the gate: keep, prune or fail",
    "gate_reason": "why, in words (also prune_reason / fail_reason when it pruned / failed)",
    "gate_probability": "the predicted probability that the trial beats the top_k-th best "
    "completed trial; the gate prunes below pruner.min_prob",
    "gate_predicted_objective": "the FT objective at the predicted rank: the completed trials' "
    "objective interpolated at the predicted normal score",
    "gate_predicted_score": "the predicted normal score of the trial's rank among the completed "
    "trials (GP mean; 0 = their median)",
    "gate_predicted_std": "the standard deviation of that score (one new trial: GP and noise)",
    "gate_threshold": "the top_k-th best completed objective the trial had to beat",
    "gate_prior_trials": "completed trials of pruner.prior_studies whose models the prediction "
    "also drew on (only with a prior)",
    "gate_prior_weight": "the share of the prediction given to the prior studies' models, by how "
    "well each ranks this study's completed trials (only with a prior)",
    "gate_history_trials": "completed trials the predictor was fitted on",
    "prune_reason": "why the trial was pruned",
    "fail_reason": "why the trial failed",
}


class InvalidSignalError(ValueError):
    """A trial's HP signals cannot be judged: one is missing, NaN or infinite.

    Raised from ``EnergyPruner.prune`` so that the trial FAILS with this message as its reason;
    pass it in ``study.optimize(..., catch=(InvalidSignalError,))`` to let the study go on.
    """


@dataclass(frozen=True)
class GateDecision:
    """What the energy pruner decided for one trial at the gate, and from what."""

    trial_number: int
    action: str  # KEEP, PRUNE or FAIL
    reason: str
    probability: float | None = None  # P(beats the top_k-th best completed trial)
    predicted: float | None = None  # the objective at the predicted rank
    predicted_score: float | None = None  # GP mean of the rank's normal score
    predicted_std: float | None = None  # and its std (new observation)
    threshold: float | None = None  # the top_k-th best completed objective
    history_trials: int = 0
    prior_trials: int = 0  # of earlier studies, fitted on too
    prior_weight: float | None = None  # the share of the priors' models in the prediction

    @property
    def prune(self) -> bool:
        return self.action == PRUNE

    def user_attrs(self) -> dict[str, Any]:
        """The decision as trial user attrs (see ``DECISION_ATTRS``); unset values are left out."""
        attrs: dict[str, Any] = {
            "gate_decision": self.action,
            "gate_reason": self.reason,
            "gate_history_trials": self.history_trials,
        }
        for key, value in (
            ("gate_probability", self.probability),
            ("gate_predicted_objective", self.predicted),
            ("gate_predicted_score", self.predicted_score),
            ("gate_predicted_std", self.predicted_std),
            ("gate_threshold", self.threshold),
            ("gate_prior_trials", self.prior_trials or None),
            ("gate_prior_weight", self.prior_weight),
        ):
            if value is not None:
                attrs[key] = value
        if self.action == PRUNE:
            attrs["prune_reason"] = self.reason
        elif self.action == FAIL:
            attrs["fail_reason"] = self.reason
        return attrs
