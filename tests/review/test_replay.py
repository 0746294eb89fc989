"""The replay engine on recorded studies made in the test (no training), and ``mode=replay`` on
the command line: its files, its numbers, and every bad input (one line, exit 2, study intact)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from conftest import run_cli
from optuna.trial import TrialState
from tabledata import add_trial, make_table_study, smooth_curve, spread_values

from hpsearch.app import compose_config
from hpsearch.errors import HpsearchError
from hpsearch.review.replay import (
    COMPLETE,
    PRUNED_FT,
    PRUNED_GATE,
    check_budget,
    cost_vs_regret,
    draw_orders,
    frontier_arms,
    load_table,
    order_metrics,
    replay,
    replay_order,
    resolve_budget,
    summarize,
)
from hpsearch.stats import bootstrap_interval, kendall_tau


def _table(tmp_path: Path, values, epochs: int = 3):
    study = make_table_study(f"sqlite:///{tmp_path}/t.db", "t", values, epochs)
    return load_table(study)


# ---------------------------------------------------------------------------- statistics


def test_kendall_tau_counts_pairs_and_ties() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # 6 pairs: 5 concordant, 1 discordant -> 4/6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # tau-b with a tie in x: pairs (1,2) tied in x; 5 untied pairs, all concordant
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / (5 * 6) ** 0.5)
    assert kendall_tau([1], [1]) is None and kendall_tau([2, 2], [1, 3]) is None


def test_bootstrap_interval_is_reproducible_and_brackets_the_mean() -> None:
    values = [0.0] * 30 + [1.0] * 10
    mean, low, high = bootstrap_interval(values)
    assert mean == pytest.approx(0.25) and low < mean < high and 0.1 < low and high < 0.4
    assert bootstrap_interval(values) == (mean, low, high)
    assert bootstrap_interval([2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert bootstrap_interval([]) is None


# ---------------------------------------------------------------------------- the engine


def test_orders_are_reproducible_draws_without_replacement() -> None:
    orders = draw_orders(50, 30, 20, seed=3)
    assert orders == draw_orders(50, 30, 20, seed=3) != draw_orders(50, 30, 20, seed=4)
    assert all(len(o) == 20 == len(set(o)) and all(0 <= i < 50 for i in o) for o in orders)
    assert len(set(orders)) == 30
    assert all(sorted(o) == list(range(5)) for o in draw_orders(5, 4, 5, seed=0))


def test_no_pruning_runs_every_epoch_and_loses_nothing(tmp_path: Path) -> None:
    table = _table(tmp_path, spread_values(12), epochs=4)
    run = replay_order(table, compose_config(["pruner=none"]), range(12))
    assert [o.state for o in run.outcomes] == [COMPLETE] * 12 and run.ft_epochs == 48
    m = order_metrics(table, run)
    assert m["ft_epochs_vs_none"] == 1.0 and m["regret_points"] == 0.0
    assert not m["none_pick_pruned"] and m["kendall_tau"] is None
    assert m["picked_test_acc"] == pytest.approx(0.95 - 0.01)


def test_median_replay_makes_the_known_decisions_and_costs(tmp_path: Path) -> None:
    """Two startup trials, then the median at each epoch of the complete ones: C and the late
    bloomer D fall below it after epoch 1; E stays above. D would have been the best."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path}/m.db", study_name="m", direction="maximize"
    )
    curves = {
        "A": [0.50, 0.60],
        "B": [0.70, 0.80],
        "C": [0.10, 0.20],
        "D": [0.20, 0.99],
        "E": [0.90, 0.95],
    }
    for i, curve in enumerate(curves.values()):
        add_trial(study, i, curve, test_acc=0.5 + i / 10)
    table = load_table(study)
    cfg = compose_config(["pruner=median", "pruner.n_startup_trials=2", "pruner.n_warmup_steps=0"])
    run = replay_order(table, cfg, range(5))
    assert [(o.state, o.ft_epochs) for o in run.outcomes] == [
        (COMPLETE, 2),
        (COMPLETE, 2),
        (PRUNED_FT, 1),
        (PRUNED_FT, 1),
        (COMPLETE, 2),
    ]
    m = order_metrics(table, run)
    assert m["ft_epochs"] == 8 and m["ft_epochs_vs_none"] == pytest.approx(0.8)
    assert m["regret_points"] == pytest.approx(4.0) and m["loses_over_1_point"]
    assert m["none_pick_pruned"] and m["pruned_ft"] == 2 and m["pruned_gate"] == 0
    assert m["picked_test_acc"] == pytest.approx(0.9)  # E's
    # In another order D comes before the median exists: nothing lost.
    again = order_metrics(table, replay_order(table, cfg, [3, 4, 0, 1, 2]))
    assert again["regret_points"] == 0.0 and not again["none_pick_pruned"]


def test_energy_replay_predicts_at_the_gate_and_ranks_the_trials(tmp_path: Path) -> None:
    table = _table(tmp_path, spread_values(16))
    cfg = compose_config(
        ["pruner=energy", "pruner.ft=none", "pruner.n_startup_trials=4", "pruner.min_prob=0.3"]
    )  # an eager gate alone: it prunes some
    run = replay_order(table, cfg, range(16))
    assert all(o.predicted is None for o in run.outcomes[:4])  # startup: no prediction
    assert all(o.predicted is not None for o in run.outcomes[4:])
    states = {o.state for o in run.outcomes}
    assert PRUNED_GATE in states and COMPLETE in states and PRUNED_FT not in states
    assert all(o.ft_epochs == 0 for o in run.outcomes if o.state == PRUNED_GATE)
    m = order_metrics(table, run)
    assert m["gate_predictions"] == 12 and m["kendall_tau"] > 0.5  # the signals carry it


def test_the_energy_model_also_judges_ft_epochs_and_the_rules_replay(tmp_path: Path) -> None:
    table = _table(tmp_path, spread_values(16), epochs=4)
    model = replay_order(table, compose_config(["pruner=energy", "pruner.min_prob=0.3"]), range(16))
    assert all(o.state == COMPLETE for o in model.outcomes[:5])  # startup
    assert {o.state for o in model.outcomes} >= {PRUNED_GATE, COMPLETE}
    # never pruned after the last epoch: it would save nothing
    assert all(o.ft_epochs < 4 for o in model.outcomes if o.state == PRUNED_FT)
    rules = replay_order(table, compose_config(["pruner=rules"]), range(16))
    assert {o.state for o in rules.outcomes} >= {PRUNED_GATE, COMPLETE}
    assert all(o.ft_epochs == 1 for o in rules.outcomes if o.state == PRUNED_FT)


def test_the_frontier_replays_each_arm_over_its_main_setting() -> None:
    arms = frontier_arms(
        {
            "none": compose_config(["pruner=none"]),
            "epoch_rule": compose_config(["pruner=epoch_rule"]),
            "energy+median": compose_config(["pruner=energy", "pruner.ft=median"]),
        }
    )
    assert arms["epoch_rule epoch_quantile=0.9"].pruner.epoch_quantile == 0.9
    assert arms["energy+median min_prob=0.12"].pruner.min_prob == 0.12
    assert arms["energy+median min_prob=0.12"].pruner.ft == "median"
    assert not [a for a in arms if a.startswith("none ")]  # no main setting
    point = {"mean": 0.5, "low": 0.4, "high": 0.6}
    summary = {name: {"ft_epochs_vs_none": point, "regret_points": point} for name in arms}
    figure = cost_vs_regret(summary)
    lines = {s.name: s for s in figure.series if s.kind == "lines+markers"}
    assert set(lines) == {
        "epoch_rule frontier (epoch_quantile)",
        "energy+median frontier (min_prob)",
    }
    assert len(lines["epoch_rule frontier (epoch_quantile)"].x) == 6
    assert [s.name for s in figure.series if s.kind == "markers"] == list(
        ("none", "epoch_rule", "energy+median")
    )


def test_many_orders_in_worker_processes_equal_one_process(tmp_path: Path) -> None:
    table = _table(tmp_path, spread_values(10))
    pruners = {
        "median": compose_config(["pruner=median", "pruner.n_startup_trials=2"]),
        "energy": compose_config(
            ["pruner=energy", "pruner.n_startup_trials=3", "pruner.min_prob=0.1"]
        ),
    }
    orders = draw_orders(10, 3, 8, seed=1)
    serial = replay(table, pruners, orders, processes=1)
    parallel = replay(table, pruners, orders, processes=2)
    for name in pruners:
        assert [r.outcomes for r in serial[name]] == [r.outcomes for r in parallel[name]]
        assert [r.order for r in parallel[name]] == orders
    summary = summarize(table, serial)
    assert summary["median"]["orders"] == 3 and summary["energy"]["kendall_tau"] is not None
    assert summary["median"]["kendall_tau"] is None


def test_table_refuses_cut_curves_and_mixed_lengths_leaves_out_confirmations(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/bad.db"
    study = make_table_study(url, "pruned", [0.5, 0.6, 0.7])
    add_trial(study, 3, [0.1], state=TrialState.PRUNED)
    with pytest.raises(HpsearchError, match="1 pruned trial"):
        load_table(study)
    table = load_table(study, skip_pruned=True)
    assert len(table.trials) == 3 and table.left_out == {"pruned (FT curve cut)": 1}
    with pytest.raises(
        HpsearchError,
        match=r"replay.budget=4 is more than the 3 complete trials of study 'pruned' "
        r"\(left out: 1 pruned",
    ):
        check_budget(table, 4)

    # not given: all of a study smaller than the default, in one line; at least 2
    with caplog.at_level("INFO", logger="hpsearch"):
        assert resolve_budget(table, None) == 3
    assert "study 'pruned' has 3 complete trials, fewer than 40: each order replays all 3" in (
        caplog.text
    )
    assert resolve_budget(table, 2) == 2
    one = load_table(make_table_study(url, "one", [0.5]))
    with pytest.raises(HpsearchError, match="study 'one' has 1 complete trial.* at least 2"):
        resolve_budget(one, None)

    confirmed = make_table_study(url, "confirmed", [0.5, 0.6, 0.7])
    add_trial(confirmed, 3, smooth_curve(0.71, 3), confirm_of=2, confirm_seed=7)
    table = load_table(confirmed)
    assert [t.number for t in table.trials] == [0, 1, 2]
    assert table.left_out == {"confirmation (mode=confirm)": 1}

    mixed = make_table_study(url, "mixed", [0.5, 0.6])
    add_trial(mixed, 2, smooth_curve(0.7, 5))
    with pytest.raises(
        HpsearchError,
        match=r"different numbers of FT epochs \(3 epochs: 2 "
        r"trials, 5 epochs: 1 trials\)",
    ):
        load_table(mixed)


# ---------------------------------------------------------------------------- the command line

STUDY = "recorded"


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """storage/hpsearch.db with a 30-trial table, a study with a pruned trial, and one whose
    trials ran different FT epochs."""
    root = tmp_path_factory.mktemp("replay-cli")
    url = f"sqlite:///{root}/storage/hpsearch.db"
    (root / "storage").mkdir()
    make_table_study(url, STUDY, spread_values(30))
    pruned = make_table_study(url, "with-pruned", spread_values(10))
    add_trial(pruned, 10, [0.2], state=TrialState.PRUNED)
    mixed = make_table_study(url, "mixed-epochs", spread_values(10))
    add_trial(mixed, 10, smooth_curve(0.5, 2))
    return root


def _snapshot(root: Path) -> list:
    storage = optuna.storages.RDBStorage(f"sqlite:///{root}/storage/hpsearch.db")
    out = []
    for s in storage.get_all_studies():
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        study_id = storage.get_study_id_from_name(s.study_name)
        out.append(
            (
                s.study_name,
                study.user_attrs,
                storage.get_study_system_attrs(study_id),
                [
                    (
                        t.number,
                        t.state,
                        t.value,
                        t.params,
                        t.user_attrs,
                        t.system_attrs,
                        t.intermediate_values,
                    )
                    for t in study.trials
                ],
            )
        )
    return out


def test_replay_writes_its_report_and_leaves_the_study_alone(cli_dir: Path) -> None:
    before = _snapshot(cli_dir)
    proc = run_cli(
        [
            "mode=replay",
            f"study.name={STUDY}",
            "replay.orders=12",
            "replay.budget=20",
            "replay.processes=1",
            "pruner.n_startup_trials=3",
            "replay.pruners=[none,median,energy+median]",
        ],
        cli_dir,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _snapshot(cli_dir) == before
    out = cli_dir / "storage" / "reports" / STUDY
    for name in (
        "replay.md",
        "replay.json",
        "replay_cost_vs_regret.png",
        "replay_cost_vs_regret.html",
    ):
        assert (out / name).is_file(), name
    assert (out / "replay_cost_vs_regret.png").stat().st_size > 10_000
    data = json.loads((out / "replay.json").read_text())
    s = data["settings"]
    assert (s["trials"], s["ft_epochs"], s["orders"], s["budget"]) == (30, 3, 12, 20)
    assert s["pruners"]["median"]["n_startup_trials"] == 3  # the command line's setting ...
    assert s["pruners"]["energy+median"] == {
        **s["pruners"]["energy+median"],
        "ft": "median",
        "n_startup_trials": 3,
        "min_prob": 0.05,
    }  # ... over pruner=energy's
    none = data["pruners"]["none"]
    assert none["ft_epochs_vs_none"]["mean"] == 1.0 and none["regret_points"]["mean"] == 0.0
    assert len(none["per_order"]) == 12
    median = data["pruners"]["median"]
    assert median["ft_epochs_vs_none"]["mean"] < 1.0  # it pruned something
    assert data["pruners"]["energy+median"]["kendall_tau"]["n"] == 12
    md = (out / "replay.md").read_text()
    assert "| median |" in md and "regret (pts)" in md and "30 complete trials × 3 FT epochs" in md
    assert "| energy+median |" in proc.stdout


BAD = {
    "unknown pruner": (["replay.pruners=[none,magic]"], "replay.pruners=['none', 'magic']"),
    "budget above the table": (
        [f"study.name={STUDY}", "replay.budget=31"],
        "replay.budget=31 is more than the 30 complete trials of study 'recorded'",
    ),
    "pruned trials": (
        ["study.name=with-pruned", "replay.budget=5"],
        "has 1 pruned trial(s): their FT curves are cut",
    ),
    "FT epochs differ": (
        ["study.name=mixed-epochs", "replay.budget=5"],
        "different numbers of FT epochs",
    ),
    "pruner chosen on the command line": (
        [f"study.name={STUDY}", "pruner=median"],
        "pruner=median: mode=replay replays the pruners named",
    ),
    "unknown study": (["study.name=nope"], "study.name='nope' is not in storage"),
    "budget below 2": (["replay.budget=1"], "replay.budget=1 is invalid"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_replay_input_is_one_line_exit_2_and_writes_nothing(cli_dir: Path, case: str) -> None:
    args, message = BAD[case]
    before = _snapshot(cli_dir)
    reports = sorted((cli_dir / "storage").rglob("replay.md"))
    proc = run_cli(["mode=replay", "replay.orders=3", *args], cli_dir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpsearch: error")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert _snapshot(cli_dir) == before
    assert sorted((cli_dir / "storage").rglob("replay.md")) == reports


def test_replay_without_a_budget_adapts_it_to_a_small_study_in_one_line(cli_dir: Path) -> None:
    proc = run_cli(
        [
            "mode=replay",
            f"study.name={STUDY}",
            "replay.orders=2",
            "replay.processes=1",
            "replay.pruners=[none]",
        ],
        cli_dir,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr  # Hydra logs to stdout
    said = [line for line in out.splitlines() if "replay.budget" in line]
    assert len(said) == 1 and "each order replays all 30" in said[0], out
    data = json.loads((cli_dir / "storage" / "reports" / STUDY / "replay.json").read_text())
    assert data["settings"]["budget"] == 30


def test_skip_pruned_replays_the_complete_trials(cli_dir: Path) -> None:
    proc = run_cli(
        [
            "mode=replay",
            "study.name=with-pruned",
            "replay.budget=8",
            "replay.orders=2",
            "replay.pruners=[none]",
            "replay.skip_pruned=true",
            "replay.processes=1",
        ],
        cli_dir,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (cli_dir / "storage" / "reports" / "with-pruned" / "replay.md").read_text()
    assert "10 complete trials × 3 FT epochs (left out: 1 pruned (FT curve cut))" in md
