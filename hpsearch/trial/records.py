"""What a trial writes: its user attrs (``METRICS`` names and explains every one; the docs'
metric table is generated from it) and the helpers that set them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from omegaconf import DictConfig

from hpsearch.errors import FAIL_REASON

# user attr -> meaning; docs/metrics.md is generated from the same words.
METRICS = {
    "schedule": "the named schedule the trial ran (conf/schedule/; none: the search space decides)",
    "baseline": "true on a trial enqueued by study.baselines, false otherwise",
    "confirm_of": "on a confirmation trial (mode=confirm): the search trial number it repeats, "
    "or the baseline schedule's name",
    "confirm_seed": "on a confirmation trial: the seed it runs (shared by every confirmed "
    "configuration and baseline)",
    "tau": "HP epochs τ of this trial (the epochs HP ran when it ran until converged)",
    "hp_until_converged": "whether HP ran until converged (capped by hp.max_epochs) instead of τ",
    "hp_converged": "whether the convergence rule held at the end of HP",
    "hp_stop_reason": "why HP stopped: tau, converged or max_epochs",
    "label_smoothing": "ε used in HP",
    "head_depth": "linear layers in the head",
    "layers_copied": "backbone stages that kept pretrained weights",
    "hp_lr": "HP learning rate",
    "ft_lr": "FT learning rate",
    "seed": "the trial's seed (head init, batch order, augmentation)",
    "sampler_seed": "the seed of the sampler that proposed the trial: study.seed + the worker's "
    "index on a fresh study, mixed with the number of trials run so far on a rerun (so a rerun "
    "samples new configurations)",
    "hp_features": "how HP got the copied part's outputs: cache, cache-disk or frozen",
    "hp_epochs_run": "HP epochs actually run",
    "energy": "mean ||e_y - q_0||_2 on the train split at the start of FT",
    "hp_train_acc": "train accuracy at the end of HP (eval mode, no augmentation)",
    "hp_train_loss": "train cross-entropy (unsmoothed) at the end of HP",
    "hp_val_acc": "validation accuracy at the end of HP",
    "head_norm": "Frobenius norm of the head's last weight matrix after HP",
    "energy_curve": "energy after 0, 1, ..., τ HP epochs",
    "hp_train_acc_curve": "train accuracy after 0, 1, ..., τ HP epochs",
    "ft_epochs_run": "FT epochs this trial actually ran",
    "ft_resumed_from_epoch": "FT epochs done before this trial started (0 unless it resumed)",
    "resumed_from_trial": "the failed trial whose checkpoint this retry continued (null: fresh)",
    "resumed_from_checkpoint": "where it continued: hp (after HP), ft_epoch_N, or null",
    "ft_val_acc_curve": "validation accuracy after each FT epoch",
    "ft_val_acc": "validation accuracy after FT (the objective)",
    "test_acc": "test accuracy after FT (recorded, never used to select)",
    "adaptation_l2": "mean ||z_T - z_0||_2 on the validation split",
    "adaptation_cos": "mean cos(z_T, z_0)",
    "adaptation_dot": "mean z_T . z_0",
    "feature_norm_T": "mean ||z_T||",
    "feature_norm_0": "mean ||z_0||",
    "wall_features_s": "seconds to get the copied part's outputs",
    "wall_hp_s": "seconds of HP",
    "wall_ft_s": "seconds of FT",
    "pruned_at": "where a pruned trial stopped: gate (before FT) or ft_epoch_N",
}


CHECKPOINT_ERROR = "checkpoint_error"

# User attrs only some trials write, so not in METRICS: why a trial failed, and a checkpoint it
# could not write. docs/metrics.md is generated from the same words.
INCIDENT_ATTRS = {
    FAIL_REASON: "why the trial failed, in one line: a stop signal, a storage unreachable for "
    "storage.outage_timeout, no heartbeat for storage.grace_period (its worker died "
    "or lost the storage), or the gate's reason; the retry that re-runs it has "
    "failed_trial / retry_history in its system attrs",
    CHECKPOINT_ERROR: "the last checkpoint the trial could not write, and why (e.g. ft_epoch_3: "
    "No space left on device); the trial went on without it",
}

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


def set_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


CONFIRM_OF = "confirm_of"
CONFIRM_SEED = "confirm_seed"


def trial_seed(study_seed: int, number: int) -> int:
    return (int(study_seed) * 1_000_003 + int(number)) % (2**31 - 1)


def confirm_seed(study_seed: int, slot: int) -> int:
    """The seed of confirmation slot 0, 1, ...: the seed a trial numbered −1, −2, ... would
    get, so it never equals a search trial's seed and every confirmed arm shares it."""
    return trial_seed(study_seed, -(int(slot) + 1))


def is_confirmation(trial: optuna.Trial | optuna.trial.FrozenTrial) -> bool:
    """True for a trial enqueued by mode=confirm (it is never pruned)."""
    return trial.user_attrs.get(CONFIRM_OF) is not None


def seed_of(trial: optuna.Trial, study_seed: int) -> int:
    """The seed a trial runs: its ``confirm_seed`` when it is a confirmation trial, else one
    derived from the study seed and the trial number."""
    if is_confirmation(trial):
        return int(trial.user_attrs[CONFIRM_SEED])
    return trial_seed(study_seed, trial.number)
