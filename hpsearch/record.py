"""The trial record: every user attr a trial writes, as one typed, frozen record.

User attrs are the study's data model: the dashboard, the report, the replay and the
confirmation read them. ``TrialRecord`` names each one as a field, so a reader writes
``TrialRecord.of(trial).energy`` instead of a string key, and ``write`` refuses a name that is
not a field. ``TRIAL_ATTRS``, ``INCIDENT_ATTRS`` and ``GATE_ATTRS`` say what each field means;
docs/metrics.md is generated from them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

# user attr -> meaning; docs/metrics.md is generated from the same words.
TRIAL_ATTRS = {
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

# User attrs only some trials write, so not in TRIAL_ATTRS: why a trial failed, and a checkpoint it
# could not write. docs/metrics.md is generated from the same words.
INCIDENT_ATTRS = {
    "fail_reason": "why the trial failed, in one line: a stop signal, a storage unreachable for "
    "storage.outage_timeout, no heartbeat for storage.grace_period (its worker died "
    "or lost the storage), or the gate's reason; the retry that re-runs it has "
    "failed_trial / retry_history in its system attrs",
    "checkpoint_error": "the last checkpoint the trial could not write, and why (e.g. ft_epoch_3: "
    "No space left on device); the trial went on without it",
}

# The user attrs a gate decision writes on its trial, and what they mean.
GATE_ATTRS = {
    "gate_decision": "the gate's decision (energy pruner or HP-accuracy rule): keep, prune or fail",
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


@dataclass(frozen=True)
class TrialRecord:
    """One trial's user attrs as fields; a field a trial did not write is None (False for
    ``baseline``). Attrs of older hpsearch versions that are no field are ignored."""

    schedule: str | None = None
    baseline: bool = False
    confirm_of: int | str | None = None
    confirm_seed: int | None = None
    tau: int | None = None
    hp_until_converged: bool | None = None
    hp_converged: bool | None = None
    hp_stop_reason: str | None = None
    label_smoothing: float | None = None
    head_depth: int | None = None
    layers_copied: int | None = None
    hp_lr: float | None = None
    ft_lr: float | None = None
    seed: int | None = None
    sampler_seed: int | None = None
    hp_features: str | None = None
    hp_epochs_run: int | None = None
    energy: float | None = None
    hp_train_acc: float | None = None
    hp_train_loss: float | None = None
    hp_val_acc: float | None = None
    head_norm: float | None = None
    energy_curve: list[float] | None = None
    hp_train_acc_curve: list[float] | None = None
    ft_epochs_run: int | None = None
    ft_resumed_from_epoch: int | None = None
    resumed_from_trial: int | None = None
    resumed_from_checkpoint: str | None = None
    ft_val_acc_curve: list[float] | None = None
    ft_val_acc: float | None = None
    test_acc: float | None = None
    adaptation_l2: float | None = None
    adaptation_cos: float | None = None
    adaptation_dot: float | None = None
    feature_norm_T: float | None = None
    feature_norm_0: float | None = None
    wall_features_s: float | None = None
    wall_hp_s: float | None = None
    wall_ft_s: float | None = None
    pruned_at: str | None = None
    fail_reason: str | None = None
    checkpoint_error: str | None = None
    gate_decision: str | None = None
    gate_reason: str | None = None
    gate_probability: float | None = None
    gate_predicted_objective: float | None = None
    gate_predicted_score: float | None = None
    gate_predicted_std: float | None = None
    gate_threshold: float | None = None
    gate_prior_trials: int | None = None
    gate_prior_weight: float | None = None
    gate_history_trials: int | None = None
    prune_reason: str | None = None

    @classmethod
    def of(cls, trial: Any) -> TrialRecord:
        """The record of a live ``optuna.Trial`` or a ``FrozenTrial`` (its ``user_attrs``)."""
        return cls.from_attrs(trial.user_attrs)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        return cls(**{k: v for k, v in attrs.items() if k in _FIELDS})

    def attrs(self) -> dict[str, Any]:
        """The fields that are set, as user attrs."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def finite(self, name: str) -> float | None:
        """Field ``name`` as a float when it is a finite number, else None."""
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None


_FIELDS = frozenset(f.name for f in dataclasses.fields(TrialRecord))


def field_name(name: str) -> str:
    """``name``, checked to be a ``TrialRecord`` field: for code that writes or looks up one
    attr by name (a storage call, a query), so that the name is still checked once."""
    if name not in _FIELDS:
        raise KeyError(f"not a TrialRecord field: {name}")
    return name


FAIL_REASON = field_name("fail_reason")
CHECKPOINT_ERROR = field_name("checkpoint_error")
CONFIRM_OF = field_name("confirm_of")
CONFIRM_SEED = field_name("confirm_seed")
SCHEDULE = field_name("schedule")
BASELINE = field_name("baseline")
SAMPLER_SEED = field_name("sampler_seed")


class _AttrWriter(Protocol):
    def set_user_attr(self, key: str, value: Any) -> None: ...


def write(trial: _AttrWriter, attrs: Mapping[str, Any]) -> None:
    """Set ``attrs`` as the trial's user attrs; a name that is no ``TrialRecord`` field is a
    programming error (KeyError), so a misspelt attr never reaches a study."""
    unknown = sorted(set(attrs) - _FIELDS)
    if unknown:
        raise KeyError(f"not TrialRecord fields: {', '.join(unknown)}")
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def schedule_text(record: TrialRecord) -> str:
    """A trial's schedule as ``τ=6 ε=0.1 depth=1 copied=5 hp_lr=0.05 ft_lr=0.012`` (HP values
    are left out when HP did not run; ``?`` for a value the trial did not record)."""

    def num(name: str) -> str:
        value = record.finite(name)
        return format(value, ".3g") if value is not None else "?"

    tau: Any = "conv" if record.hp_until_converged else record.tau
    tau = "?" if tau is None else tau
    parts = [f"τ={tau}"]
    if tau != 0:
        parts.append(f"ε={num('label_smoothing')}")
    depth = "?" if record.head_depth is None else record.head_depth
    copied = "?" if record.layers_copied is None else record.layers_copied
    parts += [f"depth={depth}", f"copied={copied}"]
    if tau != 0:
        parts.append(f"hp_lr={num('hp_lr')}")
    parts.append(f"ft_lr={num('ft_lr')}")
    return " ".join(parts)
