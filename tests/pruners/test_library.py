"""pruners/ is a config-free library: it owns its defaults and checks, and the glue above it
names the config key when a constructor refuses a value."""

from __future__ import annotations

import ast
import dataclasses
import inspect

import pytest
from conftest import REPO

from hpsearch.app import compose_config
from hpsearch.config import PrunerConfig
from hpsearch.errors import ConfigError
from hpsearch.pruners import EnergyPruner, GateAction, GateDecision, take_decision


def test_the_pruner_package_imports_nothing_from_the_config() -> None:
    for path in sorted((REPO / "hpsearch" / "pruners").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("hpsearch.config"), path.name
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("hpsearch.config") for a in node.names)


def test_the_schema_defaults_are_the_constructors_defaults() -> None:
    schema = {f.name: f.default for f in dataclasses.fields(PrunerConfig)}
    params = inspect.signature(EnergyPruner).parameters
    shared = [name for name in params if name in schema]
    assert {"n_startup_trials", "top_k", "min_prob", "energy_min", "energy_max"} <= set(shared)
    for name in shared:
        assert schema[name] == params[name].default, name


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("pruner.min_prob=1.5", "pruner.min_prob"),
        ("pruner.top_k=9", "pruner.top_k"),
        ("pruner.energy_min=-1", "pruner.energy_min"),
        ("pruner.signals=[energy,nope]", "pruner.signals"),
    ],
)
@pytest.mark.parametrize("name", ["none", "energy", "median"])
def test_a_value_the_gate_refuses_is_one_config_error_naming_the_key(
    override: str, key: str, name: str
) -> None:
    """Whatever pruner.name is: a gate setting that would be refused is refused always."""
    with pytest.raises(ConfigError) as err:
        compose_config([f"pruner={name}", override, "search_space=none", "study.n_trials=0"])
    message = str(err.value)
    assert message.startswith(key) and "\n" not in message, message


def test_an_optuna_pruner_argument_it_refuses_names_the_keys() -> None:
    with pytest.raises(ConfigError, match=r"^pruner=median: .*pruner.n_warmup_steps=-1\)$"):
        compose_config(["pruner=median", "pruner.n_warmup_steps=-1", "search_space=none"])


def test_a_decision_reaches_the_trial_through_take_decision_once() -> None:
    class Keeper:
        def __init__(self) -> None:
            self.kept = {3: GateDecision(3, GateAction.KEEP, "fine")}

        def take_decision(self, trial_number: int) -> GateDecision | None:
            return self.kept.pop(trial_number, None)

    keeper = Keeper()
    assert take_decision(keeper, 3).action is GateAction.KEEP
    assert take_decision(keeper, 3) is None
    assert take_decision(object(), 3) is None  # a pruner that keeps no decisions
    assert GateDecision(1, GateAction.PRUNE, "low").user_attrs()["gate_decision"] == "prune"


def test_a_median_pruner_may_start_pruning_at_once() -> None:
    """n_startup_trials=0 is the median pruner's to allow; the gate's own minimum (2) applies
    only under pruner=energy."""
    cfg = compose_config(["pruner=median", "pruner.n_startup_trials=0", "search_space=none"])
    assert cfg.pruner.n_startup_trials == 0
    with pytest.raises(ConfigError, match="^pruner.n_startup_trials must be >= 2"):
        compose_config(["pruner=energy", "pruner.n_startup_trials=0", "search_space=none"])
