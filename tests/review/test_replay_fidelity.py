"""Replay is faithful: on the toy, a live study with a pruner and the replay of that pruner over a
``pruner=none`` study of the same configurations, in the same order, make the same decisions and
run the same FT epochs.

The live study enqueues the ``none`` study's params in its order, so trial ``i`` of both has the
same configuration and the same seed (``records.trial_seed(study.seed, i)``): toy trials are
deterministic given both, so the live trials see the same HP signals and FT curves the table
recorded.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.app import compose_config
from hpsearch.plan import plan_study
from hpsearch.review.replay import COMPLETE, PRUNED_FT, PRUNED_GATE, load_table, replay_order
from hpsearch.study.worker import run_search
from hpsearch.trial import Objective, Workspace
from hpsearch.trial.records import GATE_INPUTS

pytestmark = pytest.mark.slow  # live searches replayed against their recording

N_TRIALS = 12
TINY = [
    "progress=false",
    "ft.epochs=3",
    "data.train_per_class=60",
    "data.val_per_class=40",
    "data.test_per_class=40",
    "data.synthetic.source_per_class=100",
    "data.synthetic.source_epochs=5",
    "study.sampler=random",
    "device=cpu",
]
# Settings under which each pruner decides often on 12 trials (asserted below).
PRUNERS = {
    "median": ["pruner=median", "pruner.n_startup_trials=3", "pruner.n_warmup_steps=0"],
    # top_k=1 and a min_prob of their own, whatever conf/pruner/energy.yaml's defaults: on this
    # table the gate prunes some trials and keeps others (with the median pruner's FT prunes,
    # energy+median's history stays small: at 0.1 its gate prunes all but one after startup)
    "energy": [
        "pruner=energy",
        "pruner.n_startup_trials=3",
        "pruner.top_k=1",
        "pruner.min_prob=0.1",
    ],
    "energy+median": [
        "pruner=energy",
        "pruner.ft=median",
        "pruner.n_startup_trials=3",
        "pruner.top_k=1",
        "pruner.min_prob=0.05",
        "pruner.n_warmup_steps=0",
    ],
}


def _storage(root: Path) -> list[str]:
    return [
        f"storage.url=sqlite:///{root}/studies.db",
        f"storage.cache_dir={root}/cache",
        f"storage.artifacts={root}/artifacts",
    ]


@pytest.fixture(scope="module")
def table_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study]:
    """A pruner=none toy study of N_TRIALS random configurations: the table."""
    root = tmp_path_factory.mktemp("fidelity")
    cfg = compose_config(
        [*TINY, *_storage(root), "pruner=none", "study.name=table", f"study.n_trials={N_TRIALS}"]
    )
    return root, run_search(cfg)


def _outcome(t: optuna.trial.FrozenTrial) -> tuple[str, int]:
    if t.state == TrialState.COMPLETE:
        return COMPLETE, int(t.user_attrs["ft_epochs_run"])
    assert t.state == TrialState.PRUNED, t.state
    at = t.user_attrs["pruned_at"]
    return (PRUNED_GATE if at == "gate" else PRUNED_FT), int(t.user_attrs["ft_epochs_run"])


@pytest.mark.parametrize("pruner", list(PRUNERS))
def test_live_study_and_replay_make_the_same_decisions(table_study, pruner: str) -> None:
    root, table_st = table_study
    recorded = sorted(table_st.get_trials(deepcopy=False), key=lambda t: t.number)
    cfg = compose_config(
        [
            *TINY,
            *_storage(root),
            *PRUNERS[pruner],
            f"study.name=live-{pruner}",
            f"study.n_trials={N_TRIALS}",
        ]
    )
    cfg.study.enqueue = [dict(t.params) for t in recorded]  # same configurations, same order
    live = sorted(run_search(cfg).get_trials(deepcopy=False), key=lambda t: t.number)
    assert [t.params for t in live] == [t.params for t in recorded]
    for a, b in zip(live, recorded):  # the same trial, as far as the gate can see
        assert {k: a.user_attrs.get(k) for k in ("seed", "energy", "hp_val_acc")} == {
            k: b.user_attrs.get(k) for k in ("seed", "energy", "hp_val_acc")
        }

    table = load_table(table_st)
    assert [t.number for t in table.trials] == list(range(N_TRIALS))
    replayed = replay_order(table, cfg, range(N_TRIALS), pruner)

    expected = [_outcome(t) for t in live]
    assert [(o.state, o.ft_epochs) for o in replayed.outcomes] == expected
    assert replayed.ft_epochs == sum(int(t.user_attrs["ft_epochs_run"]) for t in live)
    states = [s for s, _ in expected]
    assert COMPLETE in states[3:], "settings should keep some trials after startup"
    if pruner == "median":
        assert PRUNED_FT in states
    else:
        assert PRUNED_GATE in states
        # the gate computed the same prediction from the same history
        assert [o.predicted for o in replayed.outcomes] == [
            t.user_attrs.get("gate_predicted_objective") for t in live
        ]
    if pruner == "energy+median":
        assert PRUNED_FT in states


class _GateSpy(optuna.pruners.BasePruner):
    """Keeps every trial; records the user attrs a trial has when the gate asks."""

    def __init__(self) -> None:
        self.at_gate: list[set[str]] = []

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.last_step is None:
            self.at_gate.append(set(trial.user_attrs))
        return False


def test_gate_inputs_are_what_a_live_trial_has_set_when_the_gate_asks(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, *_storage(tmp_path), "study.n_trials=2"])
    spy = _GateSpy()
    study = optuna.create_study(direction="maximize", pruner=spy)
    study.optimize(Objective(cfg, plan_study(cfg), Workspace(cfg)), n_trials=2)
    assert spy.at_gate == [set(GATE_INPUTS)] * 2
