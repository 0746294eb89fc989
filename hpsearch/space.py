"""The search space: a YAML mapping from a dotted config key to an Optuna distribution.

    hp.epochs:         {type: int, low: 0, high: 32}
    hp.lr:             {type: float, low: 0.001, high: 0.3, log: true}
    hp.label_smoothing: {type: float, low: 0.0, high: 0.5, step: 0.1}
    head.depth:        {type: categorical, choices: [1, 2]}

``parse_search_space`` turns it into Optuna distributions and checks every entry against the
composed config: the key must exist, the bounds must be well-formed, and the config with each
bound (or choice) applied must still validate — so ``hp.label_smoothing: {high: 1.5}`` fails
before any trial runs. ``apply_params`` writes a trial's values into a copy of the config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from hpsearch.config import validate_config
from hpsearch.errors import ConfigError, HpsearchError

DISTRIBUTION_TYPES = ("int", "float", "categorical")
_INT_FIELDS = {"type", "low", "high", "log", "step"}
_CATEGORICAL_FIELDS = {"type", "choices"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _config_value(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            raise ConfigError(
                f"search_space: unknown key {key!r}: it must name an existing "
                "config value such as hp.epochs, hp.lr or head.depth"
            )
        node = node[part]
    if isinstance(node, (DictConfig, list)) or OmegaConf.is_list(node):
        raise ConfigError(f"search_space: key {key!r} is a config group, not a single value")
    return node


def _parse_one(key: str, spec: Any, current: Any) -> optuna.distributions.BaseDistribution:
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"search_space.{key}: must be a mapping with 'type' ({', '.join(DISTRIBUTION_TYPES)})"
        )
    kind = spec.get("type")
    if kind not in DISTRIBUTION_TYPES:
        raise ConfigError(
            f"search_space.{key}.type={kind!r} is invalid: must be one of "
            + ", ".join(DISTRIBUTION_TYPES)
        )
    allowed = _CATEGORICAL_FIELDS if kind == "categorical" else _INT_FIELDS
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ConfigError(
            f"search_space.{key}: unknown field(s) {extra} for type {kind}: allowed "
            + ", ".join(sorted(allowed))
        )
    if kind == "categorical":
        return _categorical(key, spec)
    return _numeric(key, spec, kind, current)


def _categorical(key: str, spec: Mapping[str, Any]) -> optuna.distributions.BaseDistribution:
    choices = spec.get("choices")
    if not isinstance(choices, (list, tuple)) or len(choices) == 0:
        raise ConfigError(f"search_space.{key}.choices must be a non-empty list")
    for choice in choices:
        if choice is not None and not isinstance(choice, (bool, int, float, str)):
            raise ConfigError(
                f"search_space.{key}.choices: {choice!r} is not a scalar "
                "(bool, int, float, str or null)"
            )
    return optuna.distributions.CategoricalDistribution(list(choices))


def _numeric(
    key: str, spec: Mapping[str, Any], kind: str, current: Any
) -> optuna.distributions.BaseDistribution:
    """An int or float distribution: bounds, log scale and step checked, and the type against
    the config value it replaces."""
    low, high = spec.get("low"), spec.get("high")
    if not _is_number(low) or not _is_number(high):
        raise ConfigError(
            f"search_space.{key}: low and high must be finite numbers, got "
            f"low={low!r} high={high!r}"
        )
    if low > high:
        raise ConfigError(f"search_space.{key}: low={low} > high={high}; need low <= high")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"search_space.{key}.log={log!r} must be true or false")
    if log and low <= 0:
        raise ConfigError(f"search_space.{key}: log=true needs low > 0, got low={low}")
    step = spec.get("step")
    if step is not None and (not _is_number(step) or step <= 0):
        raise ConfigError(f"search_space.{key}.step={step!r} must be a number > 0")
    if log and step is not None:
        raise ConfigError(f"search_space.{key}: step and log=true cannot be combined")

    if kind == "int":
        if isinstance(current, float) and not isinstance(current, bool):
            raise ConfigError(
                f"search_space.{key}: type int for a float config value "
                f"({current!r}); use type float"
            )
        for name, value in (("low", low), ("high", high), ("step", step)):
            if value is not None and not float(value).is_integer():
                raise ConfigError(
                    f"search_space.{key}.{name}={value} must be an integer for type int"
                )
        return optuna.distributions.IntDistribution(
            int(low), int(high), log=log, step=int(step) if step is not None else 1
        )
    if isinstance(current, int) and not isinstance(current, bool):
        raise ConfigError(
            f"search_space.{key}: type float for an integer config value "
            f"({current!r}); use type int"
        )
    return optuna.distributions.FloatDistribution(
        float(low), float(high), log=log, step=float(step) if step is not None else None
    )


def _probe_values(dist: optuna.distributions.BaseDistribution) -> list[Any]:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def parse_search_space(
    space: Mapping[str, Any], cfg: DictConfig
) -> dict[str, optuna.distributions.BaseDistribution]:
    """Turn the YAML space into distributions, rejecting anything a trial could not run with."""
    distributions: dict[str, optuna.distributions.BaseDistribution] = {}
    for key, spec in space.items():
        current = _config_value(cfg, key)
        if isinstance(spec, DictConfig):
            spec = OmegaConf.to_container(spec)
        dist = _parse_one(key, spec, current)
        for value in _probe_values(dist):
            try:
                validate_config(apply_params(cfg, {key: value}))
            except HpsearchError as err:
                raise ConfigError(
                    f"search_space.{key}: value {value!r} is outside what the config allows ({err})"
                ) from None
        distributions[key] = dist
    return distributions


def contains(dist: optuna.distributions.BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is one the distribution can produce."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    return _is_number(value) and dist.low <= value <= dist.high


def apply_params(cfg: DictConfig, params: Mapping[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with each dotted key set to its value (types checked by the schema)."""
    out = cfg.copy()
    for key, value in params.items():
        _config_value(out, key)
        try:
            OmegaConf.update(out, key, value, merge=False)
        except Exception as err:  # omegaconf's ValidationError: wrong type for the schema
            raise ConfigError(f"{key}={value!r}: {str(err).splitlines()[0]}") from None
        if key == "backbone.name":
            _apply_backbone_choice(out)
    return out


def _apply_backbone_choice(cfg: DictConfig) -> None:
    """``backbone.choices[backbone.name]``'s keys (its family, weights, ...) set in ``cfg``: a
    categorical ``backbone.name`` picks a whole backbone, not only its name. An entry that sets
    ``name`` makes the choice a label (``vit: {name: DIR, ...}``); the trial records the label."""
    entry = cfg.backbone.choices.get(cfg.backbone.name) if cfg.backbone.choices else None
    for sub, value in (entry or {}).items():
        OmegaConf.update(cfg, f"backbone.{sub}", value, merge=False)


def suggest(trial: optuna.Trial, distributions: Mapping[str, Any]) -> dict[str, Any]:
    """Ask the trial for one value per key (enqueued fixed values are returned as given)."""
    values: dict[str, Any] = {}
    for key, dist in distributions.items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            values[key] = trial.suggest_categorical(key, dist.choices)
        elif isinstance(dist, optuna.distributions.IntDistribution):
            values[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            values[key] = trial.suggest_float(
                key, dist.low, dist.high, step=dist.step, log=dist.log
            )
    return values
