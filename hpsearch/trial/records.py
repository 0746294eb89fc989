"""What a trial writes, and when: the attrs set before the gate (``GATE_INPUTS``), the schedule's
attrs, seeds and confirmation marks. The attrs themselves are ``hpsearch.record.TrialRecord``'s
fields; ``set_attrs`` writes them through it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from omegaconf import DictConfig

from hpsearch.record import TRIAL_ATTRS, TrialRecord, write

# The user attrs a trial has set when the gate asks its pruner (schedule, seed, HP phase): what a
# replay sets on a recorded trial before it asks the gate. The rest of METRICS is written after.
GATE_INPUTS = (
    "schedule",
    "baseline",
    "tau",
    "hp_until_converged",
    "hp_converged",
    "hp_stop_reason",
    "label_smoothing",
    "head_depth",
    "layers_copied",
    "hp_lr",
    "ft_lr",
    "seed",
    "hp_features",
    "hp_epochs_run",
    "energy",
    "hp_train_acc",
    "hp_train_loss",
    "hp_val_acc",
    "head_norm",
    "energy_curve",
    "hp_train_acc_curve",
    "resumed_from_trial",
    "resumed_from_checkpoint",
    "wall_features_s",
    "wall_hp_s",
)


def schedule_attrs(cfg: DictConfig) -> dict[str, Any]:
    return {
        "schedule": str(cfg.schedule.name),
        "tau": int(cfg.hp.epochs),
        "hp_until_converged": bool(cfg.hp.until_converged),
        "label_smoothing": float(cfg.hp.label_smoothing),
        "head_depth": int(cfg.head.depth),
        "layers_copied": int(cfg.backbone.layers_copied),
        "hp_lr": float(cfg.hp.lr),
        "ft_lr": float(cfg.ft.lr),
    }


METRICS = TRIAL_ATTRS  # the attrs every trial may write, and what they mean


def set_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Write ``attrs`` on the trial; each name must be a ``TrialRecord`` field."""
    write(trial, attrs)


def trial_seed(study_seed: int, number: int) -> int:
    return (int(study_seed) * 1_000_003 + int(number)) % (2**31 - 1)


def confirm_seed(study_seed: int, slot: int) -> int:
    """The seed of confirmation slot 0, 1, ...: the seed a trial numbered −1, −2, ... would
    get, so it never equals a search trial's seed and every confirmed arm shares it."""
    return trial_seed(study_seed, -(int(slot) + 1))


def is_confirmation(trial: optuna.Trial | optuna.trial.FrozenTrial) -> bool:
    """True for a trial enqueued by mode=confirm (it is never pruned)."""
    return TrialRecord.of(trial).confirm_of is not None


def seed_of(trial: optuna.Trial, study_seed: int) -> int:
    """The seed a trial runs: its ``confirm_seed`` when it is a confirmation trial, else one
    derived from the study seed and the trial number."""
    if is_confirmation(trial):
        return int(TrialRecord.of(trial).confirm_seed)
    return trial_seed(study_seed, trial.number)
