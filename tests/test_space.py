"""The YAML search space: parsed into distributions, every malformed entry rejected by key."""

from __future__ import annotations

import optuna
import pytest

from hpsearch.app import compose_config
from hpsearch.errors import ConfigError
from hpsearch.space import apply_params, parse_search_space


@pytest.fixture(scope="module")
def cfg():
    return compose_config([])


def test_default_space_parses_to_optuna_distributions(cfg):
    dists = parse_search_space(cfg.search_space, cfg)
    assert dists["hp.epochs"] == optuna.distributions.IntDistribution(0, 32)
    assert dists["hp.lr"].log is True
    assert dists["head.depth"].choices == (1, 2)


def test_apply_params_sets_dotted_keys_on_a_copy(cfg):
    out = apply_params(cfg, {"hp.epochs": 7, "hp.label_smoothing": 0.2})
    assert out.hp.epochs == 7 and out.hp.label_smoothing == 0.2
    assert cfg.hp.epochs != 7


def test_float_step_distribution(cfg):
    dists = parse_search_space(
        {"hp.label_smoothing": {"type": "float", "low": 0.0, "high": 0.4, "step": 0.1}}, cfg
    )
    assert dists["hp.label_smoothing"].step == 0.1


@pytest.mark.parametrize(
    "space, message",
    [
        ({"hp.nope": {"type": "int", "low": 0, "high": 3}}, "unknown key 'hp.nope'"),
        ({"hp.epochs": {"type": "int", "low": 5, "high": 2}}, "low=5 > high=2"),
        (
            {"hp.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
            "log=true needs low > 0",
        ),
        (
            {"head.depth": {"type": "categorical", "choices": []}},
            "choices must be a non-empty list",
        ),
        ({"hp.epochs": {"type": "float", "low": 0.5, "high": 2.5}}, "type float for an integer"),
        ({"hp.lr": {"type": "int", "low": 1, "high": 2}}, "type int for a float"),
        ({"hp.epochs": {"type": "gaussian"}}, "type='gaussian' is invalid"),
        (
            {"hp.epochs": {"type": "int", "low": 0, "high": 4, "base": 2}},
            "unknown field(s) ['base']",
        ),
        ({"hp.label_smoothing": {"type": "float", "low": 0.0, "high": 1.5}}, "must be in [0, 1)"),
        ({"backbone.layers_copied": {"type": "int", "low": 0, "high": 3}}, "layers_copied=3"),
        ({"head.depth": {"type": "categorical", "choices": [1, "deep"]}}, "'deep'"),
        ({"hp": {"type": "int", "low": 0, "high": 3}}, "is a config group"),
    ],
)
def test_invalid_entries_name_the_key(cfg, space, message):
    with pytest.raises(ConfigError) as err:
        parse_search_space(space, cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
