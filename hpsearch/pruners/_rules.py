"""Quantile rules: keep a trial whose HP accuracy, or FT accuracy after one chosen epoch, is at
least a running quantile of the values the study has seen so far. No model; the baselines the
energy pruner is measured against, and good pruners in their own right."""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial

from hpsearch.pruners._decision import GateAction, GateDecision


def _check_quantile(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and 0 < value < 1):
        raise ValueError(f"{name} must be None or in (0, 1) but got {value}.")


def _seen(values: list[float], quantile: float) -> float:
    return float(np.quantile(np.asarray(values, dtype=np.float64), quantile))


class QuantileRulePruner(BasePruner):
    """Prune a trial whose accuracy falls below a running quantile of the accuracies seen so far.

    Two checks, each optional:

    - at the *gate* (no FT step reported yet), with ``hp_quantile``: keep the trial when its
      ``hp_val_acc`` user attr (the head-probing validation accuracy) is at least the
      ``hp_quantile``-quantile of the ``hp_val_acc`` of every other trial of the study that has
      one (pruned ones too: head probing ran for all of them);
    - after FT epoch ``epoch``, with ``epoch_quantile``: keep it when its FT validation accuracy
      at that epoch is at least the ``epoch_quantile``-quantile of the accuracies the other
      trials reported at that epoch. Other epochs are never pruned.

    A check prunes only once ``n_startup_trials`` other trials have a value to compare with; a
    trial without ``hp_val_acc`` (or with a value that is not finite) is kept. Ties keep. The
    decision at the gate is kept as a ``GateDecision`` for ``take_decision``.

    ``hp_quantile=0.5`` is the "HP-accuracy rule" (keep the better half of head probings),
    ``epoch_quantile=0.75, epoch=1`` the "one-epoch rule" (Egele et al., 2023: rank the
    configurations after one epoch) and both together their combination.

    Example:

        .. code::

            pruner = QuantileRulePruner(hp_quantile=0.4, epoch_quantile=0.6)
            study = optuna.create_study(direction="maximize", pruner=pruner)

    Args:
        hp_quantile: quantile of the HP accuracies at the gate, in (0, 1); ``None``: no gate.
        epoch_quantile: quantile of the FT accuracies at ``epoch``, in (0, 1); ``None``: no
            FT check.
        epoch: the FT epoch (1-based) after which ``epoch_quantile`` applies.
        n_startup_trials: values seen before a check prunes (at least 1).
    """

    def __init__(
        self,
        *,
        hp_quantile: float | None = 0.5,
        epoch_quantile: float | None = None,
        epoch: int = 1,
        n_startup_trials: int = 5,
    ) -> None:
        _check_quantile("hp_quantile", hp_quantile)
        _check_quantile("epoch_quantile", epoch_quantile)
        if hp_quantile is None and epoch_quantile is None:
            raise ValueError("hp_quantile and epoch_quantile cannot both be None.")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch must be an int >= 1 but got {epoch!r}.")
        if isinstance(n_startup_trials, bool) or n_startup_trials < 1:
            raise ValueError(f"n_startup_trials must be >= 1 but got {n_startup_trials}.")
        self._hp_quantile = hp_quantile
        self._epoch_quantile = epoch_quantile
        self._epoch = epoch
        self._n_startup_trials = n_startup_trials
        self._decisions: dict[int, GateDecision] = {}

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            decision = self._gate(study, trial)
            if decision is None:
                return False
            self._decisions[trial.number] = decision
            return decision.prune
        if self._epoch_quantile is None or step != self._epoch:
            return False
        value = trial.intermediate_values[step]
        if not math.isfinite(value):
            return False
        seen = [
            t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False)
            if t.number != trial.number
            and step in t.intermediate_values
            and math.isfinite(t.intermediate_values[step])
        ]
        return len(seen) >= self._n_startup_trials and value < _seen(seen, self._epoch_quantile)

    def take_decision(self, trial_number: int) -> GateDecision | None:
        """The gate decision made for the trial (once; None without a gate check)."""
        return self._decisions.pop(trial_number, None)

    def _gate(self, study: optuna.study.Study, trial: FrozenTrial) -> GateDecision | None:
        if self._hp_quantile is None:
            return None
        value = _finite(trial.user_attrs.get("hp_val_acc"))
        if value is None:
            return GateDecision(
                trial.number, GateAction.KEEP, "no finite hp_val_acc: kept unjudged"
            )
        seen = [
            v
            for t in study.get_trials(deepcopy=False)
            if t.number != trial.number
            and (v := _finite(t.user_attrs.get("hp_val_acc"))) is not None
        ]
        if len(seen) < self._n_startup_trials:
            return GateDecision(
                trial.number,
                GateAction.KEEP,
                f"startup: {len(seen)} of {self._n_startup_trials} HP accuracies seen",
            )
        cut = _seen(seen, self._hp_quantile)
        words = (
            f"hp_val_acc {value:.4f} {'<' if value < cut else '>='} the {self._hp_quantile:g}"
            f"-quantile {cut:.4f} of {len(seen)} HP accuracies seen"
        )
        return GateDecision(
            trial.number, GateAction.PRUNE if value < cut else GateAction.KEEP, words, threshold=cut
        )


def _finite(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
