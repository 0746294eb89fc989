"""Where a trial asks the study's pruner: at the gate between head probing and finetuning (on
the HP signals), and after every FT epoch (on the FT validation accuracy).

A live trial (``trial.objective``) and a replayed one (``review.replay``) make these same calls,
so a pruner is judged in replay exactly as it acts in a search."""

from __future__ import annotations

from collections.abc import Sequence

import optuna

from hpsearch.pruners import take_decision
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
    try:
        pruned = trial.should_prune()
    finally:
        decision = take_decision(trial.study.pruner, trial.number)
        if decision is not None:
            set_attrs(trial, decision.user_attrs())
    if pruned:
        set_attrs(trial, {"pruned_at": "gate", "ft_epochs_run": 0})
        raise optuna.TrialPruned(
            decision.reason if decision is not None else "pruned at the gate before FT"
        )


def judge_epoch(
    trial: optuna.Trial,
    epoch: int,
    val_acc: float,
    curve: Sequence[float],
    epochs_before: int = 0,
    prunable: bool = True,
) -> None:
    """Report the FT validation accuracy after ``epoch`` (1-based) and, unless the trial is not
    ``prunable`` (a confirmation runs to the end), ask the pruner; when it prunes, record where
    (``curve``: the accuracies so far; ``epochs_before``: FT epochs run before this trial
    resumed) and raise ``optuna.TrialPruned``."""
    trial.report(val_acc, step=epoch)
    if prunable and trial.should_prune():
        set_attrs(
            trial,
            {
                "pruned_at": f"ft_epoch_{epoch}",
                "ft_epochs_run": epoch - epochs_before,
                "ft_val_acc_curve": list(curve),
            },
        )
        raise optuna.TrialPruned(f"pruned after FT epoch {epoch} (val acc {val_acc:.4f})")
