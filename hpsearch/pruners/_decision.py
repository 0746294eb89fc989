"""A gate's decision on one trial, what it writes on the trial, and how the trial fetches it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from hpsearch.record import GATE_ATTRS


class GateAction(str, Enum):
    """What a gate decided for a trial; its value is the ``gate_decision`` user attr."""

    KEEP = "keep"
    PRUNE = "prune"
    FAIL = "fail"


DECISION_ATTRS = GATE_ATTRS  # the user attrs a gate decision writes, and what they mean


class InvalidSignalError(ValueError):
    """A trial's HP signals cannot be judged: one is missing, NaN or infinite.

    Raised from ``EnergyPruner.prune`` so that the trial FAILS with this message as its reason;
    pass it in ``study.optimize(..., catch=(InvalidSignalError,))`` to let the study go on.
    """


@dataclass(frozen=True)
class GateDecision:
    """What the energy pruner decided for one trial at the gate, and from what."""

    trial_number: int
    action: GateAction
    reason: str
    probability: float | None = None  # P(beats the top_k-th best completed trial)
    predicted: float | None = None  # the objective at the predicted rank
    predicted_score: float | None = None  # GP mean of the rank's normal score
    predicted_std: float | None = None  # and its std (new observation)
    threshold: float | None = None  # the top_k-th best completed objective
    history_trials: int = 0
    prior_trials: int = 0  # of earlier studies, fitted on too

    @property
    def prune(self) -> bool:
        return self.action is GateAction.PRUNE

    def user_attrs(self) -> dict[str, Any]:
        """The decision as trial user attrs (see ``DECISION_ATTRS``); unset values are left out."""
        attrs: dict[str, Any] = {
            "gate_decision": self.action.value,
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
        ):
            if value is not None:
                attrs[key] = value
        if self.action is GateAction.PRUNE:
            attrs["prune_reason"] = self.reason
        elif self.action is GateAction.FAIL:
            attrs["fail_reason"] = self.reason
        return attrs


class RecordsDecisions(Protocol):
    """A pruner that keeps its gate decisions for the trial to record (a pruner cannot write on
    the ``FrozenTrial`` it is given): ``take_decision`` hands one over, once."""

    def take_decision(self, trial_number: int) -> GateDecision | None: ...


def take_decision(pruner: object, trial_number: int) -> GateDecision | None:
    """The gate decision ``pruner`` kept for the trial, if it keeps any (``RecordsDecisions``);
    None for pruners that only judge FT epochs."""
    take = getattr(pruner, "take_decision", None)
    return take(trial_number) if callable(take) else None
