"""The gate between head probing and finetuning: the study's pruner judges the HP signals."""
from __future__ import annotations

import optuna

from hpsearch.pruners import EnergyPruner
from hpsearch.trial.records import is_confirmation, set_attrs


def gate(trial: optuna.Trial) -> None:
    """The decision point between HP and FT: the study's pruner sees the HP signals (user
    attrs) before any FT step is reported. Pruners that only judge FT epochs (median,
    hyperband) have no reported step yet and keep the trial. The energy pruner's decision is
    recorded on the trial whatever it is; on NaN/inf signals it raises InvalidSignalError and
    the trial fails with that reason. A confirmation trial (mode=confirm) passes without asking:
    it exists to measure its configuration's accuracy on another seed, not to compete."""
    if is_confirmation(trial):
        return
    pruner = trial.study.pruner
    try:
        pruned = trial.should_prune()
    finally:
        decision = (pruner.take_decision(trial.number) if isinstance(pruner, EnergyPruner)
                    else None)
        if decision is not None:
            set_attrs(trial, decision.user_attrs())
    if pruned:
        set_attrs(trial, {"pruned_at": "gate", "ft_epochs_run": 0})
        raise optuna.TrialPruned(decision.reason if decision is not None
                                 else "pruned at the gate before FT")
