"""The study's pruner, built from ``cfg.pruner``: the glue between the config and the
config-free pruner library (``hpsearch.pruners``). It opens the prior studies' storage, and it
turns a pruner constructor's ``ValueError`` into a one-line ``ConfigError`` naming
``pruner.<key>``."""

from __future__ import annotations

import functools
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import ConfigError, safe_url
from hpsearch.pruners import EnergyPruner, QuantileRulePruner
from hpsearch.tables import name_list, short_name


def make_pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    """The study's pruner; its FT-epoch pruners see FT validation accuracy at steps 1..ft.epochs.

    ``pruner=energy`` asks its model at the gate and, unless ``pruner.ft`` names another pruner
    for them, after every FT epoch; with ``pruner.prior_studies`` it also draws on the models of
    those studies. ``pruner=hp_rule | epoch_rule | rules`` are the quantile rules.
    """
    p = cfg.pruner
    if p.name == "energy":
        prior: dict[str, tuple[FrozenTrial, ...]] = {}
        if p.prior_studies:
            url = str(p.prior_storage if p.prior_storage is not None else cfg.storage.url)
            prior = prior_trials(url, tuple(str(n) for n in p.prior_studies))
        ft = None if p.ft == "model" else epoch_pruner(str(p.ft), cfg)
        return _energy_pruner(p, ft, max(1, int(cfg.ft.epochs)), prior)
    if p.name in RULE_DEFAULTS:
        return _rule_pruner(p)
    return epoch_pruner(str(p.name), cfg)


# pruner=NAME -> its (hp_quantile, epoch_quantile) when pruner.hp_quantile / epoch_quantile are
# null (None: that rule is off): the rules measured in docs/energy-pruner.md.
RULE_DEFAULTS = {"hp_rule": (0.5, None), "epoch_rule": (None, 0.75), "rules": (0.4, 0.6)}


def _rule_pruner(p: DictConfig) -> QuantileRulePruner:
    hp_default, epoch_default = RULE_DEFAULTS.get(str(p.name), (0.5, 0.75))
    try:
        return QuantileRulePruner(
            hp_quantile=None
            if hp_default is None
            else (p.hp_quantile if p.hp_quantile is not None else hp_default),
            epoch_quantile=None
            if epoch_default is None
            else (p.epoch_quantile if p.epoch_quantile is not None else epoch_default),
            epoch=int(p.epoch),
            n_startup_trials=int(p.n_startup_trials),
        )
    except ValueError as err:  # its message starts with the argument's name
        raise ConfigError(f"pruner.{err}") from None


def check_pruner(cfg: DictConfig) -> None:
    """Build the configured pruner without opening any storage, so that a bad ``pruner.<key>``
    is one ConfigError before anything runs. The energy gate's keys are checked whatever
    ``pruner.name`` is: a value that would be refused under ``pruner=energy`` is refused always."""
    p = cfg.pruner
    if p.ft != "model":
        epoch_pruner(str(p.ft), cfg)
    epoch_pruner(str(p.name), cfg)
    ft_epochs = max(1, int(cfg.ft.epochs))
    if p.name == "energy":
        _energy_pruner(p, None, ft_epochs, {})
    else:  # the gate's own keys; n_startup_trials is the FT pruner's to judge here
        startup = max(2, int(p.top_k)) if int(p.n_startup_trials) < 2 else p.n_startup_trials
        _energy_pruner(OmegaConf.merge(p, {"n_startup_trials": startup}), None, ft_epochs, {})
    if p.name in RULE_DEFAULTS:
        _rule_pruner(p)


def _energy_pruner(
    p: DictConfig,
    ft_pruner: optuna.pruners.BasePruner | None,
    ft_epochs: int,
    prior: dict[str, tuple[FrozenTrial, ...]],
) -> EnergyPruner:
    try:
        return EnergyPruner(
            ft_pruner,
            n_startup_trials=int(p.n_startup_trials),
            top_k=int(p.top_k),
            min_prob=float(p.min_prob),
            ft_epochs=ft_epochs,
            energy_min=p.energy_min,
            energy_max=p.energy_max,
            signals=tuple(p.signals) if p.signals is not None else None,
            curve_signals=tuple(p.curve_signals) if p.curve_signals is not None else None,
            params=tuple(p.params) if p.params is not None else None,
            prior_trials=prior,
        )
    except ValueError as err:  # its message starts with the argument's name
        raise ConfigError(f"pruner.{err}") from None


@functools.lru_cache(maxsize=8)
def prior_trials(url: str, names: tuple[str, ...]) -> dict[str, tuple[FrozenTrial, ...]]:
    """The complete trials of each of the studies ``names`` in the storage at ``url``, read once per
    process (a replay builds a pruner per order). ConfigError, one line, when the storage cannot
    be read, a study is missing, or it is minimised (hpsearch maximises ``ft_val_acc``)."""
    shown = safe_url(url)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        raise ConfigError(
            f"pruner.prior_studies: no SQLite file at {shown!r}; set "
            "pruner.prior_storage to the storage URL that holds them"
        )
    try:
        storage = optuna.storages.get_storage(url)
        known = optuna.get_all_study_names(storage=storage)
    except Exception as err:  # a bad URL or an unreachable server
        raise ConfigError(
            f"pruner.prior_studies: cannot read their storage {shown!r} "
            f"({type(err).__name__}); set pruner.prior_storage to the storage "
            "URL that holds them"
        ) from None
    trials: dict[str, tuple[FrozenTrial, ...]] = {}
    for name in names:
        if name not in known:
            raise ConfigError(
                f"pruner.prior_studies: no study {short_name(name)!r} in {shown!r}; it "
                f"has {name_list(sorted(known))}"
            )
        study_id = storage.get_study_id_from_name(name)
        if storage.get_study_directions(study_id) != [StudyDirection.MAXIMIZE]:
            raise ConfigError(
                f"pruner.prior_studies: study {name!r} is not a single maximised "
                "objective; a prior must rank trials as this study does"
            )
        trials[name] = tuple(
            storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        )
    return trials


def epoch_pruner(name: str, cfg: DictConfig) -> optuna.pruners.BasePruner:
    """A pruner of FT epochs by name (none, median, hyperband), set from ``cfg.pruner``; an
    argument Optuna refuses is a ConfigError naming the keys it was built from."""
    p = cfg.pruner
    try:
        if name == "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=int(p.n_startup_trials), n_warmup_steps=int(p.n_warmup_steps)
            )
        if name == "hyperband":
            return optuna.pruners.HyperbandPruner(
                min_resource=int(p.min_resource),
                max_resource=max(1, int(cfg.ft.epochs)),
                reduction_factor=int(p.reduction_factor),
            )
    except ValueError as err:
        keys = _EPOCH_PRUNER_KEYS[name]
        given = ", ".join(f"pruner.{k}={p[k]}" for k in keys)
        raise ConfigError(f"pruner={name}: {str(err).rstrip('.')} ({given})") from None
    return optuna.pruners.NopPruner()


_EPOCH_PRUNER_KEYS = {
    "median": ("n_startup_trials", "n_warmup_steps"),
    "hyperband": ("min_resource", "reduction_factor"),
}
