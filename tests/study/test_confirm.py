"""mode=confirm: the top configurations and the baselines re-run on shared seeds, the answer with
t intervals, enqueued once, never pruned, and every bad input refused before anything is enqueued.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import optuna
import pytest
from conftest import run_cli
from optuna.trial import TrialState, create_trial

from hpsearch.app import compose_config
from hpsearch.plan import plan_study
from hpsearch.study.answer import study_answer
from hpsearch.trial import Objective, Workspace
from hpsearch.trial.records import confirm_seed

pytestmark = pytest.mark.slow  # searches and confirmations through the command line, with workers

TINY = [
    "progress=false",
    "ft.epochs=1",
    "hp.max_epochs=6",
    "data.train_per_class=60",
    "data.val_per_class=40",
    "data.test_per_class=40",
    "data.synthetic.source_per_class=100",
    "data.synthetic.source_epochs=5",
    "search_space={hp.epochs: {type: int, low: 0, high: 3}, "
    "ft.lr: {type: float, low: 0.005, high: 0.05, log: true}}",
]
CONFIRM = ["mode=confirm", "study.confirm.top_k=2", "study.confirm.seeds=2"]
# Student's t quantile t_{0.975, 1}: the 95% interval of a mean over 2 seeds is ± this · s / √2.
T_975_DF1 = 12.706204736174707


def load(work: Path, name: str = "toy") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{work}/storage/hpsearch.db")


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [x for x in result.stderr.splitlines() if x.startswith("hpsearch: error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return errors[0]


def interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) computed here from the definition, for 2 values."""
    mean = statistics.fmean(values)
    half = T_975_DF1 * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory):
    """A 3-trial toy search, then mode=confirm (top 2, 2 seeds, ft_only and lp_ft), then
    mode=confirm again, then mode=report."""
    work = tmp_path_factory.mktemp("confirm")
    search = run_cli(["study.n_trials=3", *TINY], cwd=work)
    assert search.returncode == 0, search.stderr[-2000:]
    first = run_cli([*CONFIRM, *TINY], cwd=work)
    assert first.returncode == 0, first.stderr[-2000:]
    n_after_first = len(load(work).trials)
    second = run_cli([*CONFIRM, *TINY], cwd=work)
    assert second.returncode == 0, second.stderr[-2000:]
    report = run_cli(["mode=report"], cwd=work)
    assert report.returncode == 0, report.stderr[-2000:]
    return work, first, second, n_after_first


def test_confirm_runs_the_top_configurations_and_baselines_on_shared_seeds(confirmed):
    work, first, _, _ = confirmed
    study = load(work)
    search = [t for t in study.trials if "confirm_of" not in t.user_attrs]
    confirmations = [t for t in study.trials if "confirm_of" in t.user_attrs]
    assert len(search) == 3 and len(confirmations) == 2 * 2 + 2 * 2
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    best = sorted(search, key=lambda t: (-t.value, t.number))[:2]
    seeds = {confirm_seed(0, 0), confirm_seed(0, 1)}
    assert seeds.isdisjoint({t.user_attrs["seed"] for t in search})
    arms = {}
    for t in confirmations:
        arms.setdefault(t.user_attrs["confirm_of"], []).append(t)
        assert t.user_attrs["seed"] == t.user_attrs["confirm_seed"]  # the seed it really ran
    assert set(arms) == {best[0].number, best[1].number, "ft_only", "lp_ft"}
    for key, runs in arms.items():
        assert {t.user_attrs["confirm_seed"] for t in runs} == seeds  # paired: the same seeds
        if isinstance(key, int):  # a configuration: the search trial's values, not a baseline
            origin = study.trials[key]
            assert all(t.params == origin.params and not t.user_attrs["baseline"] for t in runs)
        else:
            assert all(t.user_attrs["baseline"] and t.user_attrs["schedule"] == key for t in runs)
    assert all(t.user_attrs["tau"] == 0 for t in arms["ft_only"])
    assert all(t.user_attrs["hp_until_converged"] for t in arms["lp_ft"])
    assert "8 trials enqueued" in first.stderr + first.stdout
    assert study.metric_names == ["ft_val_acc"]  # the dashboard's plots name the objective


def test_a_second_confirm_adds_nothing(confirmed):
    work, _, second, n_after_first = confirmed
    assert len(load(work).trials) == n_after_first
    log = second.stderr + second.stdout
    assert "0 trials enqueued" in log and "answer: " in log


def test_report_intervals_match_a_direct_computation_from_the_trials(confirmed):
    work, first, _, _ = confirmed
    study = load(work)
    runs: dict[str, dict[int, optuna.trial.FrozenTrial]] = {}
    for t in study.trials:
        if "confirm_of" in t.user_attrs:
            key = t.user_attrs["confirm_of"]
            name = key if isinstance(key, str) else f"trial {key}"
            runs.setdefault(name, {})[t.user_attrs["confirm_seed"]] = t
    rows = list(csv.DictReader(open(work / "storage" / "reports" / "toy" / "confirm.csv")))
    arms = {r["arm"]: r for r in rows if r["kind"] == "arm"}
    assert set(arms) == set(runs)
    for name, by_seed in runs.items():
        val = [by_seed[s].value for s in sorted(by_seed)]
        test = [by_seed[s].user_attrs["test_acc"] for s in sorted(by_seed)]
        for prefix, values in (("val", val), ("test", test)):
            expected = interval(values)
            got = [float(arms[name][f"{prefix}_{k}"]) for k in ("mean", "low", "high")]
            assert got == pytest.approx(expected, abs=1e-9), (name, prefix)
    diffs = [r for r in rows if r["kind"] == "difference"]
    assert len(diffs) == 2 * 2  # every configuration against every baseline
    for r in diffs:
        a, b = runs[r["arm"]], runs[r["versus"]]
        seeds = sorted(a)
        for prefix, get in (
            ("val", lambda t: t.value),
            ("test", lambda t: t.user_attrs["test_acc"]),
        ):
            expected = interval([get(a[s]) - get(b[s]) for s in seeds])  # paired by seed
            got = [float(r[f"{prefix}_{k}"]) for k in ("mean", "low", "high")]
            assert got == pytest.approx(expected, abs=1e-9), (r["arm"], r["versus"], prefix)

    summary = (work / "storage" / "reports" / "toy" / "summary.md").read_text()
    answer = study.user_attrs["answer"]  # what the dashboard shows
    assert answer.startswith(("use ", "no configuration beats"))
    assert (
        answer[0].upper() + answer[1:] in summary
        and f"answer: {answer}" in first.stdout + first.stderr
    )
    assert len(study.user_attrs["answer_arms"]) == 4
    assert "## The answer" in summary and "[`confirm.csv`](confirm.csv)" in summary


def test_auto_confirm_with_two_workers_shares_the_confirmation_and_adds_no_search_trial(tmp_path):
    result = run_cli(
        [
            "workers=2",
            "study.n_trials=2",
            "study.confirm.auto=true",
            "study.confirm.top_k=1",
            "study.confirm.seeds=2",
            "study.confirm.baselines=[ft_only]",
            *TINY,
        ],
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    study = load(tmp_path)
    confirmations = [t for t in study.trials if "confirm_of" in t.user_attrs]
    assert len(study.trials) - len(confirmations) == 2 * 2  # the search: 2 workers × 2 trials
    assert len(confirmations) == 2 + 2 and all(t.state == TrialState.COMPLETE for t in study.trials)
    logs = sorted((tmp_path / "storage" / "logs" / "toy").glob("*-confirm/worker-*.log"))
    assert [p.name for p in logs] == ["worker-0.log", "worker-1.log"]
    ran = {
        int(line.split("trial ", 1)[1].split(":", 1)[0])
        for p in logs
        for line in p.read_text().splitlines()
        if "] - trial " in line
    }
    assert ran == {t.number for t in confirmations}  # the confirm round ran exactly those
    assert all("answer: " in p.read_text() for p in logs)


# ---------------------------------------------------------------- bad inputs: nothing enqueued


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Study 'toy' with one complete trial, and study 'empty' with none."""
    work = tmp_path_factory.mktemp("confirm-bad")
    for args in (["study.n_trials=1"], ["study.n_trials=0", "study.name=empty"]):
        result = run_cli([*args, *TINY], cwd=work)
        assert result.returncode == 0, result.stderr[-2000:]
    return work


BAD = {
    "no complete trial": (["study.name=empty"], "has no complete search trial to confirm"),
    "top_k below 1": (["study.confirm.top_k=0"], "study.confirm.top_k=0 is invalid: must be >= 1"),
    "seeds below 1": (["study.confirm.seeds=0"], "study.confirm.seeds=0 is invalid: must be >= 1"),
    "unknown baseline": (
        ["study.confirm.baselines=[ft_only,nope]"],
        "study.confirm.baselines[1]: unknown schedule 'nope'; available:",
    ),
    "baseline twice": (["study.confirm.baselines=[lp_ft,lp_ft]"], "'lp_ft' is listed twice"),
    "unknown study": (["study.name=other"], "study.name='other' is not in storage"),
    "another config than the search's": (
        ["ft.epochs=2"],
        "ft.epochs=2 differs from the search's ft.epochs=1",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_confirm_input_is_one_line_exit_2_and_enqueues_nothing(studies, case):
    args, message = BAD[case]
    before = {name: len(load(studies, name).trials) for name in ("toy", "empty")}
    line = one_error_line(run_cli(["mode=confirm", *TINY, *args], cwd=studies))
    assert message in line, line
    assert {name: len(load(studies, name).trials) for name in ("toy", "empty")} == before


def test_bad_confirm_input_with_workers_fails_before_any_worker_starts(studies):
    line = one_error_line(
        run_cli(["mode=confirm", "workers=2", "study.name=empty", *TINY], cwd=studies)
    )
    assert "has no complete search trial" in line
    assert not (studies / "storage" / "logs").exists()
    assert len(load(studies, "empty").trials) == 0


def test_a_search_with_auto_confirm_checks_its_baselines_before_it_starts(tmp_path):
    line = one_error_line(
        run_cli(
            [
                "study.n_trials=1",
                "study.confirm.auto=true",
                "study.confirm.baselines=[lp_ft,nope]",
                *TINY,
            ],
            cwd=tmp_path,
        )
    )
    assert "study.confirm.baselines[1]: unknown schedule 'nope'" in line
    assert not (tmp_path / "storage" / "hpsearch.db").exists()  # no study was created


def test_the_launcher_runs_auto_confirm_as_a_search_round_then_a_confirm_round():
    from hpsearch.study.launcher import worker_args

    argv = ["workers=2", "mode=search", "study.confirm.auto=true", "study.n_trials=3"]
    assert worker_args(argv) == argv[1:]
    assert worker_args(argv, "search") == [
        "study.n_trials=3",
        "mode=search",
        "study.confirm.auto=false",
    ]
    assert worker_args(argv, "confirm") == [
        "study.n_trials=3",
        "mode=confirm",
        "study.confirm.auto=false",
    ]


# ---------------------------------------------------------------- never pruned


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_a_confirmation_trial_is_never_pruned_and_runs_its_seed(tmp_path):
    cfg = compose_config(
        [*TINY[:-1], "ft.epochs=2", "search_space=none", f"storage.cache_dir={tmp_path}/cache"]
    )
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    study.enqueue_trial({})  # an ordinary trial: pruned at the gate
    study.enqueue_trial({}, user_attrs={"confirm_of": 0, "confirm_seed": 1234})
    objective = Objective(cfg, plan_study(cfg), Workspace(cfg))
    study.optimize(objective, n_trials=2)
    ordinary, confirmation = study.trials
    assert ordinary.state == TrialState.PRUNED and ordinary.user_attrs["pruned_at"] == "gate"
    assert confirmation.state == TrialState.COMPLETE
    assert confirmation.user_attrs["seed"] == 1234 and "pruned_at" not in confirmation.user_attrs
    assert sorted(confirmation.intermediate_values) == [1, 2]  # every FT epoch reported


# ---------------------------------------------------------------- the recommendation


def trial(
    number: int,
    value: float,
    test: float,
    confirm_of=None,
    seed=None,
    baseline: bool = False,
    state: TrialState = TrialState.COMPLETE,
    tau: int = 4,
) -> optuna.trial.FrozenTrial:
    attrs = {
        "test_acc": test,
        "tau": tau,
        "label_smoothing": 0.1,
        "head_depth": 1,
        "layers_copied": 5,
        "hp_lr": 0.05,
        "ft_lr": 0.01,
        "baseline": baseline,
    }
    if confirm_of is not None:
        attrs.update(confirm_of=confirm_of, confirm_seed=seed)
    t = create_trial(
        state=state, value=value if state == TrialState.COMPLETE else None, user_attrs=attrs
    )
    t.number = number
    return t


def arm(first: int, confirm_of, vals, tests, baseline=False):
    return [
        trial(first + i, v, t, confirm_of, seed, baseline)
        for i, (seed, v, t) in enumerate(zip((11, 22, 33), vals, tests))
    ]


def test_recommends_a_configuration_that_beats_every_baseline_beyond_the_noise():
    trials = (
        [trial(0, 0.80, 0.79)]
        + arm(1, 0, [0.76, 0.77, 0.78], [0.75, 0.76, 0.78])
        + arm(4, "lp_ft", [0.74, 0.75, 0.76], [0.74, 0.745, 0.76], baseline=True)
        + arm(7, "ft_only", [0.65, 0.66, 0.64], [0.64, 0.65, 0.66], baseline=True)
    )
    answer = study_answer(trials)
    # +2.0 points over lp_ft on every seed: the paired interval is +2.0 ± 0.0; test differences
    # 1.0, 1.5, 2.0 points: mean 1.5, s = 0.5, t_{0.975,2} · s / √3 = 1.24.
    assert answer.recommendation == (
        "use trial 0 (τ=4 ε=0.1 depth=1 copied=5 hp_lr=0.05 "
        "ft_lr=0.01): +2.0 ± 0.0 points validation over lp_ft "
        "(3 seeds); test +1.5 ± 1.2"
    )
    assert answer.arms[0].search_value == 0.80 and answer.pending == 0


def test_recommends_the_strongest_baseline_when_nothing_beats_it_beyond_the_noise():
    trials = (
        [trial(0, 0.80, 0.79)]
        + arm(1, 0, [0.76, 0.74, 0.79], [0.75, 0.76, 0.78])
        + arm(4, "lp_ft", [0.75, 0.75, 0.76], [0.74, 0.745, 0.76], baseline=True)
        + arm(7, "ft_only", [0.65, 0.66, 0.64], [0.64, 0.65, 0.66], baseline=True)
        + [trial(10, None, None, "lp_ft", 44, True, TrialState.WAITING)]
    )
    answer = study_answer(trials)
    assert answer.recommendation == (
        "no configuration beats lp_ft beyond the noise (3 seeds): "
        "use lp_ft (provisional: 9 of 10 confirmation trials "
        "finished)"
    )
    assert study_answer([trial(0, 0.8, 0.8)]) is None  # nothing confirmed: no answer
