"""Storage, sampler, pruner and study setup, and the table of best trials.

Storage is any SQLAlchemy URL (``storage.url``); the default is a SQLite file under ``storage/``.
Opening it is checked before any work starts: an unreachable server, a wrong password or an
unknown database becomes one line that names the URL with its password hidden.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import optuna
from omegaconf import DictConfig, OmegaConf

from hpsearch.errors import ConfigError, HpsearchError

log = logging.getLogger(__name__)

SQLITE_TIMEOUT_S = 60  # seconds a writer waits for the file lock before "database is locked"


def safe_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2, "pool_recycle": 300}


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDBStorage for ``url``; any failure to connect becomes an HpsearchError."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        raise HpsearchError(f"storage.url={url!r} is not a database URL; expected e.g. "
                            "sqlite:///storage/hpsearch.db or "
                            "postgresql+psycopg2://user:pass@host:5432/db") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
    except Exception as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()
        reason = reason[0] if reason else type(err).__name__
        raise HpsearchError(f"storage.url={safe_url(url)}: cannot open storage "
                            f"({type(err).__name__}: {reason[:200]})") from None


def make_sampler(study_cfg: DictConfig, worker_offset: int = 0) -> optuna.samplers.BaseSampler:
    seed = int(study_cfg.seed) + worker_offset
    if study_cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(study_cfg.n_startup_trials))


def make_pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    """The study's pruner; its FT-epoch pruners see FT validation accuracy at steps 1..ft.epochs."""
    p = cfg.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(p.n_startup_trials),
                                           n_warmup_steps=int(p.n_warmup_steps))
    if p.name == "hyperband":
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
        study.set_user_attr("config", OmegaConf.to_container(cfg, resolve=True))
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
    else:
        outcome = state.name.lower()
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        best = "best -"
    return (f"trial {trial.number}: {schedule} | energy={_fmt(a.get('energy'))} "
            f"hp_acc={_fmt(a.get('hp_train_acc'))} | {outcome} | {best}")
