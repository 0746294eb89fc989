"""The study plan: what a study searches, computed once from a validated config.

``plan_study(cfg)`` turns the config into everything the launcher, the workers and the trials
need to know about the search: the study's own schedule, the search space that schedule leaves
open (Optuna distributions), the fixed trials of ``study.enqueue``, the baselines of
``study.baselines`` and the confirmation arms of ``study.confirm.baselines`` (each a schedule with
its recorded params). Every schedule and every bound is validated on the way, so a plan is a
checked plan; the command line computes it once per process and hands it down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from hpsearch.config import validate_config
from hpsearch.errors import ConfigError
from hpsearch.record import TrialRecord
from hpsearch.schedules import Schedule, checked_apply, load_schedule, study_schedule
from hpsearch.space import apply_params, contains, parse_search_space, suggest

Distributions = dict[str, optuna.distributions.BaseDistribution]
BASELINES_KEY = "study.baselines"
CONFIRM_BASELINES_KEY = "study.confirm.baselines"


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


@dataclass(frozen=True)
class Arm:
    """A named schedule run as a fixed trial (a baseline or a confirmation arm): the schedule,
    and its values for the search-space keys it can be recorded under (its trial's params)."""

    schedule: Schedule
    params: dict[str, Any]

    @property
    def name(self) -> str:
        return self.schedule.name


@dataclass(frozen=True)
class StudyPlan:
    """What one study searches. ``distributions`` is ``search_space`` less the keys the study's
    schedule fixes or makes moot; ``enqueued`` the checked ``study.enqueue`` entries;
    ``baselines`` and ``confirm_arms`` the named schedules of ``study.baselines`` and
    ``study.confirm.baselines``, in their order."""

    schedule: Schedule
    distributions: Distributions
    enqueued: list[dict[str, Any]] = field(default_factory=list)
    baselines: list[Arm] = field(default_factory=list)
    confirm_arms: list[Arm] = field(default_factory=list)
    _loaded: dict[str, Arm] = field(default_factory=dict, repr=False, compare=False)

    def arm(self, name: str) -> Arm:
        """The baseline or confirmation arm called ``name``. A baseline trial an earlier run of
        the study enqueued under another config names a schedule this plan may not list: it is
        loaded then, once."""
        for arm in (*self.baselines, *self.confirm_arms):
            if arm.name == name:
                return arm
        if name not in self._loaded:  # its recorded params are in the trial already
            self._loaded[name] = Arm(load_schedule(name, "trial schedule"), {})
        return self._loaded[name]

    def trial_config(self, trial: optuna.Trial, cfg: DictConfig) -> DictConfig:
        """The config one trial runs: its schedule (a baseline's, else the study's) applied to
        the worker's ``cfg``, then the trial's values for the keys that schedule leaves open."""
        record = TrialRecord.of(trial)
        if record.baseline:
            arm = self.arm(str(record.schedule))
            schedule, keys = arm.schedule, list(arm.params)
        else:
            schedule, keys = self.schedule, list(self.distributions)
        applied = schedule.apply(cfg)
        return apply_params(applied, suggest(trial, {k: self.distributions[k] for k in keys}))


def plan_study(cfg: DictConfig) -> StudyPlan:
    """The checked plan of the study ``cfg`` configures (ConfigError naming the key)."""
    schedule = study_schedule(cfg)
    applied = checked_apply(cfg, schedule, "schedule")
    fixed = schedule.fixed_keys(applied)
    space = {k: v for k, v in (_plain(cfg.search_space) or {}).items() if k not in fixed}
    distributions = parse_search_space(space, applied)
    return StudyPlan(
        schedule=schedule,
        distributions=distributions,
        enqueued=_checked_enqueue(cfg, distributions),
        baselines=_arms(cfg, BASELINES_KEY, distributions),
        confirm_arms=_arms(cfg, CONFIRM_BASELINES_KEY, distributions),
    )


def _arms(cfg: DictConfig, key: str, distributions: Distributions) -> list[Arm]:
    """The schedules named by the list at ``key``, each checked against the config, with their
    values for the search-space keys they can be recorded under."""
    names = list(_plain(OmegaConf.select(cfg, key)) or [])
    arms = []
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"{key}: {name!r} is listed twice")
        schedule = load_schedule(name, f"{key}[{i}]")
        applied = checked_apply(cfg, schedule, f"{key}[{i}]")
        arms.append(Arm(schedule, _recorded_params(schedule, applied, distributions)))
    return arms


def _recorded_params(
    schedule: Schedule, applied: DictConfig, distributions: Mapping[str, Any]
) -> dict[str, Any]:
    """A baseline's values for the search-space keys it can be recorded under: not a key it
    makes moot, and only a value the distribution contains (so the sampler learns from it)."""
    moot = schedule.moot_keys(applied)
    params = {}
    for key, dist in distributions.items():
        value = OmegaConf.select(applied, key)
        if key not in moot and contains(dist, value):
            params[key] = value
    return params


def _checked_enqueue(cfg: DictConfig, distributions: Distributions) -> list[dict[str, Any]]:
    """The configured fixed trials, each key a search-space key with an allowed value."""
    fixed = []
    for i, entry in enumerate(OmegaConf.to_container(cfg.study.enqueue, resolve=True) or []):
        if not isinstance(entry, dict) or not entry:
            raise ConfigError(
                f"study.enqueue[{i}] must be a non-empty mapping of search-space keys to values"
            )
        for key, value in entry.items():
            if key not in distributions:
                raise ConfigError(
                    f"study.enqueue[{i}]: {key!r} is not a search-space key; "
                    f"allowed: {', '.join(distributions)}"
                )
            if not contains(distributions[key], value):
                raise ConfigError(
                    f"study.enqueue[{i}]: {key}={value!r} lies outside its "
                    f"search-space distribution {distributions[key]}"
                )
        validate_config(apply_params(cfg, entry))
        fixed.append(entry)
    return fixed
