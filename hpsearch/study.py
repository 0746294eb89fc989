"""Sampler, pruner and study setup, and the table of best trials.

Storage is any SQLAlchemy URL (``storage.url``); the default is a SQLite file under ``storage/``.
Opening it (``hpsearch.storage.open_storage``, re-exported here) is checked before any work
starts: an unreachable server, a wrong password or an unknown database becomes one line that
names the URL with its password hidden.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Mapping

import optuna
from omegaconf import DictConfig, OmegaConf

from hpsearch.errors import ConfigError
from hpsearch.storage import (Heartbeat, Pool, engine_kwargs, open_storage,  # noqa: F401
                              safe_url, setup_lock)

log = logging.getLogger(__name__)

def make_sampler(study_cfg: DictConfig, worker_offset: int = 0) -> optuna.samplers.BaseSampler:
    seed = int(study_cfg.seed) + worker_offset
    if study_cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(study_cfg.n_startup_trials))


def make_pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    """The study's pruner; its FT-epoch pruners see FT validation accuracy at steps 1..ft.epochs.

    ``pruner=energy`` decides at the gate before FT and hands the FT epochs to ``pruner.ft``.
    """
    p = cfg.pruner
    if p.name == "energy":
        from hpsearch.pruners import SIGNALS, EnergyPruner

        return EnergyPruner(epoch_pruner(str(p.ft), cfg),
                            n_startup_trials=int(p.n_startup_trials), top_k=int(p.top_k),
                            kappa=float(p.kappa), min_std=float(p.min_std),
                            energy_min=p.energy_min,
                            energy_max=p.energy_max,
                            signals=tuple(p.signals) if p.signals is not None else tuple(SIGNALS))
    return epoch_pruner(str(p.name), cfg)


def epoch_pruner(name: str, cfg: DictConfig) -> optuna.pruners.BasePruner:
    """A pruner of FT epochs by name (none, median, hyperband), set from ``cfg.pruner``."""
    p = cfg.pruner
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(p.n_startup_trials),
                                           n_warmup_steps=int(p.n_warmup_steps))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=int(p.min_resource),
                                              max_resource=max(1, int(cfg.ft.epochs)),
                                              reduction_factor=int(p.reduction_factor))
    return optuna.pruners.NopPruner()


def create_study(cfg: DictConfig, storage: optuna.storages.BaseStorage,
                 sampler: optuna.samplers.BaseSampler,
                 pruner: optuna.pruners.BasePruner) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=str(cfg.study.name),
                                direction="maximize", sampler=sampler, pruner=pruner,
                                load_if_exists=True)
    if "config" not in study.user_attrs:
        config = OmegaConf.to_container(cfg, resolve=True)
        config["storage"]["url"] = safe_url(str(cfg.storage.url))  # never store the password
        study.set_user_attr("config", config)
    return study


def prepare_study(cfg: DictConfig, fixed: list[dict[str, Any]],
                  setup: Callable[[optuna.Study], Any] | None = None) -> optuna.Study:
    """Open the storage (heartbeat on), create or load the study, enqueue the fixed trials and
    run ``setup(study)`` (the baselines), holding the storage's setup lock so that any number of
    workers may do it at the same moment (a fixed trial is enqueued once, however many workers
    start together)."""
    from hpsearch.workers import worker_index

    url = str(cfg.storage.url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with setup_lock(url):
        storage = open_storage(url, Heartbeat.from_config(cfg.storage),
                               Pool.from_config(cfg.storage))
        study = create_study(cfg, storage, make_sampler(cfg.study, worker_index(url)),
                             make_pruner(cfg))
        for params in fixed:
            study.enqueue_trial(params, skip_if_exists=True)
        if setup is not None:
            setup(study)
    return study


def check_enqueue(cfg: DictConfig, distributions: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The configured fixed trials, each key a search-space key with an allowed value."""
    from hpsearch.config import validate_config
    from hpsearch.space import apply_params, contains

    fixed = []
    for i, entry in enumerate(OmegaConf.to_container(cfg.study.enqueue, resolve=True) or []):
        if not isinstance(entry, dict) or not entry:
            raise ConfigError(f"study.enqueue[{i}] must be a non-empty mapping of search-space "
                              "keys to values")
        for key, value in entry.items():
            if key not in distributions:
                raise ConfigError(f"study.enqueue[{i}]: {key!r} is not a search-space key; "
                                  f"allowed: {', '.join(distributions)}")
            if not contains(distributions[key], value):
                raise ConfigError(f"study.enqueue[{i}]: {key}={value!r} lies outside its "
                                  f"search-space distribution {distributions[key]}")
        validate_config(apply_params(cfg, entry))
        fixed.append(entry)
    return fixed


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, spec)
    return str(value)


def best_trials_table(study: optuna.Study, top_k: int) -> str:
    """A text table of the top-k complete trials by FT validation accuracy."""
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    done.sort(key=lambda t: t.value, reverse=True)
    header = ("trial", "ft_val_acc", "tau", "eps", "depth", "copied", "hp_lr", "ft_lr", "energy",
              "hp_acc", "adapt_l2", "test_acc")
    rows = [header]
    for t in done[:top_k]:
        a = t.user_attrs
        rows.append((str(t.number), _fmt(t.value, ".4f"), _fmt(a.get("tau")),
                     _fmt(a.get("label_smoothing"), ".2f"), _fmt(a.get("head_depth")),
                     _fmt(a.get("layers_copied")), _fmt(a.get("hp_lr"), ".4g"),
                     _fmt(a.get("ft_lr"), ".4g"), _fmt(a.get("energy")),
                     _fmt(a.get("hp_train_acc")), _fmt(a.get("adaptation_l2")),
                     _fmt(a.get("test_acc"), ".4f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def prune_reason(trial: optuna.trial.FrozenTrial) -> str:
    """Where a pruned trial stopped and on what: its ``prune_reason`` attr when set, else its
    ``pruned_at`` and the last FT validation accuracy it reported."""
    a = trial.user_attrs
    if a.get("prune_reason"):
        return str(a["prune_reason"])
    if trial.intermediate_values:
        epoch = max(trial.intermediate_values)
        return (f"{a.get('pruned_at', f'ft_epoch_{epoch}')}: FT val acc "
                f"{trial.intermediate_values[epoch]:.4f} after epoch {epoch}")
    if a.get("pruned_at") == "gate":
        return "gate: after HP, before FT"
    return str(a.get("pruned_at", "no reason recorded"))


def trial_line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """One progress line for a finished trial: schedule, energy, outcome, best so far."""
    a = trial.user_attrs
    schedule = (f"tau={_fmt(a.get('tau'))} eps={_fmt(a.get('label_smoothing'), '.2f')} "
                f"depth={_fmt(a.get('head_depth'))} copied={_fmt(a.get('layers_copied'))} "
                f"hp_lr={_fmt(a.get('hp_lr'), '.3g')} ft_lr={_fmt(a.get('ft_lr'), '.3g')}")
    state = trial.state
    if state == optuna.trial.TrialState.COMPLETE:
        outcome = f"ft_val_acc={trial.value:.4f}"
    elif state == optuna.trial.TrialState.PRUNED:
        outcome = f"pruned ({prune_reason(trial)})"
    elif a.get("fail_reason"):
        outcome = f"failed ({a['fail_reason']})"
    else:
        outcome = state.name.lower()
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        best = "best -"
    return (f"trial {trial.number}: {schedule} | energy={_fmt(a.get('energy'))} "
            f"hp_acc={_fmt(a.get('hp_train_acc'))} | {outcome} | {best}")
