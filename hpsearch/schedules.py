"""Named schedules: the recipes the literature compares (ft_only, lp_ft, early_hp, ...) as configs.

A schedule is a file ``conf/schedule/NAME.yaml`` with a ``name``, a one-line ``about`` and ``set``,
a nested mapping of config values applied over the composed config (after the experiment overlay,
so the schedule wins). ``backbone.layers_copied`` may be the word ``all`` or ``all_but_last``,
resolved against the backbone's stage count.

How a schedule meets the search space:

- ``schedule=NAME`` is the study's schedule. Every searched trial runs with its values; the keys
  it fixes leave the search space, and so do the keys it makes moot (``hp.epochs`` when HP runs
  until converged; every ``hp.*`` key when it fixes τ = 0). The search tunes what is left, so
  ``schedule=lp_ft search_space=none study.n_trials=1`` is exactly one LP-FT trial with the
  experiment's learning rates, and ``schedule=lp_ft`` alone tunes LP-FT's learning rates.
- ``study.baselines=[A, B]`` enqueues each named schedule once as a fixed trial (user attrs
  ``schedule=A`` and ``baseline=true``). A baseline runs the experiment's config with A's values,
  whatever the study's own schedule; every other value is the config's, not a sampled one. Its
  values for the study's search-space keys become the trial's params where the distribution
  contains them (so the sampler learns from the baseline); a key it makes moot or whose value lies
  outside the distribution is left out of the params.
- ``study.confirm.baselines`` names the schedules ``mode=confirm`` runs next to the search's best
  configurations (``hpsearch.study.confirm``), enqueued the same way, once per confirmation seed.

``hpsearch.plan`` turns the study's schedule and its baselines into the study plan, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hpsearch.config import CONF_DIR, backbone_stage_count, validate_config
from hpsearch.errors import ConfigError, HpsearchError
from hpsearch.space import apply_params

SCHEDULE_DIR = CONF_DIR / "schedule"
LAYERS_COPIED = "backbone.layers_copied"
COPY_WORDS = {"all": 0, "all_but_last": 1}  # word -> stages left out of the copy


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


@dataclass(frozen=True)
class Schedule:
    """A named set of fixed config values.

    ``values`` maps dotted config keys to values (``backbone.layers_copied`` may be a word of
    ``COPY_WORDS``). ``apply`` returns the config a trial of this schedule runs;
    ``fixed_keys`` the keys it takes out of a search space.
    """

    name: str
    about: str
    values: Mapping[str, Any]

    @classmethod
    def from_node(cls, node: Any) -> Schedule:
        node = _plain(node)
        values = node.get("set") or {}
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"schedule {node.get('name')!r}: set must be a mapping of config "
                "values, e.g. {hp: {epochs: 4}}"
            )
        return cls(str(node.get("name", "")), str(node.get("about", "")), _flatten(values))

    def resolved(self, cfg: DictConfig) -> dict[str, Any]:
        """``values`` with the layers_copied words turned into stage counts for cfg's backbone."""
        out = dict(self.values)
        copied = out.get(LAYERS_COPIED)
        if isinstance(copied, str):
            if copied not in COPY_WORDS:
                raise ConfigError(
                    f"schedule {self.name}: {LAYERS_COPIED}={copied!r} is invalid: "
                    f"must be an integer, {' or '.join(COPY_WORDS)}"
                )
            n_stages = _stage_count(cfg.backbone)
            out[LAYERS_COPIED] = n_stages - COPY_WORDS[copied]
        return out

    def apply(self, cfg: DictConfig) -> DictConfig:
        """A copy of ``cfg`` with this schedule's values set and ``schedule`` naming it."""
        values = self.resolved(cfg)
        for key in values:
            if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
                raise ConfigError(f"schedule {self.name}: unknown config key {key!r} in set")
        out = apply_params(cfg, values)
        out.schedule.name, out.schedule.about = self.name, self.about
        out.schedule.set = _unflatten(self.values)
        return out

    def moot_keys(self, applied: DictConfig) -> set[str]:
        """Keys whose value cannot change what a trial of this schedule does."""
        moot: set[str] = set()
        if applied.hp.until_converged:
            moot.add("hp.epochs")
        elif int(self.values.get("hp.epochs", -1)) == 0:
            moot.update(f"hp.{key}" for key in applied.hp)  # HP does not run
        return moot

    def fixed_keys(self, applied: DictConfig) -> set[str]:
        """The keys a study with this schedule does not search: its own and the moot ones."""
        return set(self.values) | self.moot_keys(applied)


_MISSING = object()


def _stage_count(bb: DictConfig) -> int:
    """The backbone's stage count; a family's backbone is built to count them, so torch is
    imported only then (a config check of the other backbones stays torch-free)."""
    if not bb.get("_target_"):
        return backbone_stage_count(str(bb.arch), int(bb.mlp_depth))
    from hpsearch.backbones import stage_count

    return stage_count(bb)


def available() -> list[str]:
    return sorted(p.stem for p in SCHEDULE_DIR.glob("*.yaml"))


def load_schedule(name: str, key: str = "schedule") -> Schedule:
    """The schedule ``conf/schedule/NAME.yaml``; ``key`` names the setting in the error."""
    path = SCHEDULE_DIR / f"{name}.yaml"
    if not isinstance(name, str) or not name or "/" in name or not path.is_file():
        raise ConfigError(f"{key}: unknown schedule {name!r}; available: {', '.join(available())}")
    return Schedule.from_node(OmegaConf.load(path))


def study_schedule(cfg: DictConfig) -> Schedule:
    """The study's own schedule (``schedule=NAME`` with any ``schedule.set.*`` overrides)."""
    return Schedule.from_node(cfg.schedule)


def checked_apply(cfg: DictConfig, schedule: Schedule, key: str) -> DictConfig:
    """``schedule.apply(cfg)``, validated; errors name ``key`` and the schedule."""
    try:
        applied = schedule.apply(cfg)
        validate_config(applied)
    except HpsearchError as err:
        raise ConfigError(f"{key}={schedule.name}: {err}") from None
    return applied
