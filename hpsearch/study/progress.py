"""What a worker prints: one line per finished trial, and the table of best trials."""

from __future__ import annotations

import optuna

from hpsearch.record import TrialRecord
from hpsearch.tables import fmt, text_table
from hpsearch.trial.records import is_confirmation


def best_trials_table(study: optuna.Study, top_k: int) -> str:
    """A text table of the top-k complete trials by FT validation accuracy (confirmation trials,
    repeats of a search trial on other seeds, are the answer's, not this table's)."""
    done = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == optuna.trial.TrialState.COMPLETE
        and t.value is not None
        and not is_confirmation(t)
    ]
    done.sort(key=lambda t: t.value, reverse=True)
    header = (
        "trial",
        "ft_val_acc",
        "tau",
        "eps",
        "depth",
        "copied",
        "hp_lr",
        "ft_lr",
        "energy",
        "hp_acc",
        "adapt_l2",
        "test_acc",
    )
    by_backbone = any("backbone.name" in t.params for t in done)  # a searched backbone
    rows = [header + (("backbone",) if by_backbone else ())]
    for t in done[:top_k]:
        r = TrialRecord.of(t)
        rows.append(
            (
                str(t.number),
                fmt(t.value, ".4f"),
                fmt(r.tau, "d"),
                fmt(r.label_smoothing, ".2f"),
                fmt(r.head_depth, "d"),
                fmt(r.layers_copied, "d"),
                fmt(r.hp_lr, ".4g"),
                fmt(r.ft_lr, ".4g"),
                fmt(r.energy, ".3f"),
                fmt(r.hp_train_acc, ".3f"),
                fmt(r.adaptation_l2, ".3f"),
                fmt(r.test_acc, ".4f"),
            )
            + ((str(t.params.get("backbone.name", "")),) if by_backbone else ())
        )
    return text_table(rows)


def prune_reason(trial: optuna.trial.FrozenTrial) -> str:
    """Where a pruned trial stopped and on what: its ``prune_reason`` attr when set, else its
    ``pruned_at`` and the last FT validation accuracy it reported."""
    r = TrialRecord.of(trial)
    if r.prune_reason:
        return str(r.prune_reason)
    if trial.intermediate_values:
        epoch = max(trial.intermediate_values)
        return (
            f"{r.pruned_at or f'ft_epoch_{epoch}'}: FT val acc "
            f"{trial.intermediate_values[epoch]:.4f} after epoch {epoch}"
        )
    if r.pruned_at == "gate":
        return "gate: after HP, before FT"
    return str(r.pruned_at or "no reason recorded")


def trial_line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """One progress line for a finished trial: schedule, energy, outcome, best so far."""
    a = TrialRecord.of(trial)
    schedule = (
        f"tau={fmt(a.tau, 'd')} eps={fmt(a.label_smoothing, '.2f')} "
        f"depth={fmt(a.head_depth, 'd')} "
        f"copied={fmt(a.layers_copied, 'd')} "
        f"hp_lr={fmt(a.hp_lr, '.3g')} ft_lr={fmt(a.ft_lr, '.3g')}"
    )
    state = trial.state
    if state == optuna.trial.TrialState.COMPLETE:
        outcome = f"ft_val_acc={trial.value:.4f}"
    elif state == optuna.trial.TrialState.PRUNED:
        outcome = f"pruned ({prune_reason(trial)})"
    elif a.fail_reason:
        outcome = f"failed ({a.fail_reason})"
    else:
        outcome = state.name.lower()
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        best = "best -"
    return (
        f"trial {trial.number}: {schedule} | energy={fmt(a.energy, '.3f')} "
        f"hp_acc={fmt(a.hp_train_acc, '.3f')} | {outcome} | {best}"
    )
