"""``mode=replay``: what a pruner would have saved on a finished study, and what it would have cost.

A study whose trials ran every FT epoch is a *table*: per trial, its parameters, the user attrs
it had set when the gate asked (``trial.records.GATE_INPUTS``) and its FT validation accuracy
after every epoch. Replaying a pruner on an *order* (a sequence of the table's trials) plays
those trials, one after another, into a fresh in-memory Optuna study that has the pruner: each
replayed trial gets its recorded params (enqueued), its gate inputs as user attrs, then
``trial.gate.gate`` and, per recorded FT epoch, ``trial.gate.judge_epoch`` — the calls a live
trial makes, through the same pruner objects (``study.pruning.make_pruner``). A trial costs the FT
epochs it would have run: all of them when it completes, ``k`` when pruned after epoch ``k``,
none when pruned or failed at the gate. The sampler plays no part (every param is fixed), and
trial numbers follow the order, as in a live study that ran the trials in that order.

The engine is ``load_table`` (a stored study -> ``Table``), ``draw_orders`` and
``replay_order`` (one table, one pruner config, one order -> ``OrderReplay``: every trial's
outcome and cost); ``replay`` runs many orders and pruners, in worker processes when asked, and
``order_metrics`` / ``summarize`` turn outcomes into the numbers of ``replay.md``:

- FT epochs run as a fraction of ``none``'s (every trial of the order runs every epoch);
- regret: the best objective of the order without pruning minus the best a pruner keeps (the
  best complete trial), in points (x100); the share of orders that lose more than 1 point;
- the test accuracy of the trial each would pick (the first best complete trial of the order);
- how often the trial ``none`` would pick was pruned; trials pruned at the gate and in FT;
- for gate pruners, Kendall's τ between the gate's predicted objective and the recorded one,
  over the trials of the order it predicted for (pruned ones included: the table knows them).

Each is the mean over the orders with a 95% percentile-bootstrap interval of that mean
(``stats.bootstrap_interval``; the interval is over orders drawn from this one study).

``write_replay`` (the mode) reads ``study.name`` from ``storage.url`` and never writes to it;
it writes ``replay.md``, ``replay.json`` and the cost-vs-regret figure (PNG + HTML) to
``<storage.reports>/<study.name>/`` and prints a short table.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import HpsearchError
from hpsearch.pruners import InvalidSignalError
from hpsearch.record import TrialRecord
from hpsearch.review import plots
from hpsearch.review.report import load_existing_study
from hpsearch.stats import bootstrap_interval, finite, kendall_tau
from hpsearch.study.pruning import make_pruner
from hpsearch.study.storage import safe_url
from hpsearch.tables import MISSING, markdown_table
from hpsearch.trial.gate import gate, judge_epoch
from hpsearch.trial.records import GATE_INPUTS, is_confirmation, set_attrs

log = logging.getLogger("hpsearch")

REPLAY_MD = "replay.md"
REPLAY_JSON = "replay.json"
NONE = "none"
LOSS_POINTS = 1.0  # an order "loses" when its regret exceeds this many points
# outcomes of a replayed trial
COMPLETE, PRUNED_GATE, PRUNED_FT, FAILED = "complete", "pruned_gate", "pruned_ft", "failed"


# ---------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class RecordedTrial:
    """One trial of a table: what a replay needs to play it again."""

    number: int  # in the recorded study
    params: Mapping[str, Any]
    distributions: Mapping[str, BaseDistribution]
    gate_inputs: Mapping[str, Any]  # the user attrs it had set when the gate asked
    curve: tuple[float, ...]  # FT validation accuracy after epochs 1..ft_epochs, as reported
    value: float  # the objective (FT validation accuracy after the last epoch)
    test_acc: float | None


@dataclass(frozen=True)
class Table:
    """A study's trials that ran every FT epoch, and which trials were left out and why."""

    study_name: str
    trials: tuple[RecordedTrial, ...]
    ft_epochs: int
    left_out: Mapping[str, int] = field(default_factory=dict)  # reason -> trials

    def spread(self) -> dict[str, float]:
        """Best, median and worst objective of the table."""
        values = [t.value for t in self.trials]
        return {"best": max(values), "median": statistics.median(values), "worst": min(values)}


def recorded_trial(t: FrozenTrial) -> RecordedTrial:
    steps = sorted(t.intermediate_values)
    record = TrialRecord.of(t)
    return RecordedTrial(
        number=t.number,
        params=dict(t.params),
        distributions=dict(t.distributions),
        gate_inputs={k: v for k, v in record.attrs().items() if k in GATE_INPUTS},
        curve=tuple(float(t.intermediate_values[s]) for s in steps),
        value=float(t.value),
        test_acc=record.finite("test_acc"),
    )


def load_table(study: optuna.Study, skip_pruned: bool = False) -> Table:
    """The complete trials of ``study`` as a table (HpsearchError when it cannot be one).

    Pruned trials stopped early, so their curves are cut and the complete ones are the
    survivors of that pruner: a study with pruned trials is refused unless ``skip_pruned``.
    Failed, running and waiting trials, and mode=confirm's trials (a top configuration run
    again on another seed), are left out (counted in ``left_out``). The complete
    trials must have one FT length, reported at steps 1..ft_epochs, and a finite objective.
    """
    name = study.study_name
    trials = study.get_trials(deepcopy=False)
    left_out: dict[str, int] = {}
    for state, why in (
        (TrialState.PRUNED, "pruned (FT curve cut)"),
        (TrialState.FAIL, "failed"),
        (TrialState.RUNNING, "running"),
        (TrialState.WAITING, "waiting"),
    ):
        n = sum(1 for t in trials if t.state == state)
        if n:
            left_out[why] = n
    pruned = left_out.get("pruned (FT curve cut)", 0)
    if pruned and not skip_pruned:
        complete = sum(1 for t in trials if t.state == TrialState.COMPLETE)
        raise HpsearchError(
            f"study {name!r} has {pruned} pruned trial(s): their FT curves are cut and its "
            f"{complete} complete trials are the ones that survived its pruner; replay a study "
            "run with pruner=none, or pass replay.skip_pruned=true to replay the complete "
            "trials alone (biased towards the survivors)"
        )
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    confirming = [t for t in done if is_confirmation(t)]
    if confirming:  # a top configuration again on another seed: not a trial of the search
        left_out["confirmation (mode=confirm)"] = len(confirming)
        done = [t for t in done if not is_confirmation(t)]
    no_value = [t for t in done if not finite(t.value)]
    if no_value:
        left_out["complete without a finite objective"] = len(no_value)
        done = [t for t in done if finite(t.value)]
    ft_epochs = _ft_length(name, done)
    return Table(
        name,
        tuple(recorded_trial(t) for t in sorted(done, key=lambda t: t.number)),
        ft_epochs,
        left_out,
    )


def _ft_length(name: str, done: Sequence[FrozenTrial]) -> int:
    """The one FT length of the complete trials, each reported at steps 1..ft_epochs."""
    lengths: dict[int, int] = {}
    for t in done:
        steps = sorted(t.intermediate_values)
        if steps != list(range(1, len(steps) + 1)):
            raise HpsearchError(
                f"study {name!r}: trial {t.number} reported FT steps {steps}, "
                "not 1..ft.epochs; replay needs one report per FT epoch"
            )
        lengths[len(steps)] = lengths.get(len(steps), 0) + 1
    if len(lengths) > 1:
        counts = ", ".join(f"{n} epochs: {k} trials" for n, k in sorted(lengths.items()))
        raise HpsearchError(
            f"study {name!r}: its complete trials ran different numbers of FT "
            f"epochs ({counts}); replay needs one FT length"
        )
    ft_epochs = next(iter(lengths), 0)
    if done and ft_epochs == 0:
        raise HpsearchError(
            f"study {name!r}: its trials ran no FT epoch (ft.epochs=0); there is "
            "nothing for a pruner to save"
        )
    return ft_epochs


DEFAULT_BUDGET = 40  # trials per order when replay.budget is not given


def check_budget(table: Table, budget: int) -> None:
    if len(table.trials) < budget:
        left = "; ".join(f"{n} {why}" for why, n in table.left_out.items()) or "none"
        raise HpsearchError(
            f"replay.budget={budget} is more than the {len(table.trials)} complete trials of "
            f"study {table.study_name!r} (left out: {left}); lower replay.budget or "
            "run more trials"
        )


def resolve_budget(table: Table, budget: int | None) -> int:
    """The trials per order: ``budget`` when given (at most the table's trials), else
    ``DEFAULT_BUDGET`` or, for a smaller study, all its complete trials (logged in one line)."""
    if budget is not None:
        check_budget(table, budget)
        return budget
    n = len(table.trials)
    if n < 2:
        left = "; ".join(f"{k} {why}" for why, k in table.left_out.items()) or "none"
        raise HpsearchError(
            f"study {table.study_name!r} has {n} complete trial(s) (left out: {left}); a replay "
            "needs at least 2: run more trials"
        )
    if n >= DEFAULT_BUDGET:
        return DEFAULT_BUDGET
    log.info(
        "replay.budget: study %r has %d complete trials, fewer than %d: each order replays "
        "all %d (replay.budget=N sets it)",
        table.study_name,
        n,
        DEFAULT_BUDGET,
        n,
    )
    return n


def draw_orders(n_trials: int, orders: int, budget: int, seed: int) -> list[tuple[int, ...]]:
    """``orders`` random orders of ``budget`` of the trials 0..n_trials-1 (indexes into
    ``Table.trials``), each drawn without replacement; the same arguments give the same orders."""
    rng = np.random.default_rng(seed)
    return [
        tuple(int(i) for i in rng.choice(n_trials, size=budget, replace=False))
        for _ in range(orders)
    ]


# ---------------------------------------------------------------------------- one order


@dataclass(frozen=True)
class Outcome:
    """What happened to one replayed trial."""

    index: int  # into Table.trials
    state: str  # complete | pruned_gate | pruned_ft | failed
    ft_epochs: int  # FT epochs it ran: its cost
    predicted: float | None = None  # the gate's predicted objective, when it predicted one


@dataclass(frozen=True)
class OrderReplay:
    """One pruner on one order: every trial's outcome, in the order played."""

    pruner: str
    order: tuple[int, ...]
    outcomes: tuple[Outcome, ...]
    seconds: float  # wall time of the replay
    cpu_seconds: float  # CPU time of this process during it (the machine's load aside)

    @property
    def ft_epochs(self) -> int:
        return sum(o.ft_epochs for o in self.outcomes)


def replay_order(
    table: Table, pruner_cfg: DictConfig, order: Sequence[int], name: str = ""
) -> OrderReplay:
    """Play the trials ``order`` (indexes into ``table.trials``) into a fresh in-memory study
    whose pruner is ``make_pruner(pruner_cfg)`` (its ``pruner`` settings; ``ft.epochs`` is set to
    the table's). The study is named after the table's, as the hyperband pruner's brackets
    depend on the name."""
    start, cpu = time.perf_counter(), time.process_time()
    cfg = pruner_cfg.copy()
    cfg.ft.epochs = table.ft_epochs
    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(),
        study_name=table.study_name,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=make_pruner(cfg),
    )
    outcomes = []
    for index in order:
        rec = table.trials[index]
        study.enqueue_trial(dict(rec.params))
        trial = study.ask(dict(rec.distributions))  # the enqueued params, not sampled ones
        set_attrs(trial, rec.gate_inputs)
        epochs = 0
        try:
            gate(trial)
            for epoch, acc in enumerate(rec.curve, start=1):
                epochs = epoch
                judge_epoch(trial, epoch, acc, rec.curve[:epoch])
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            state = PRUNED_GATE if TrialRecord.of(trial).pruned_at == "gate" else PRUNED_FT
        except InvalidSignalError:
            study.tell(trial, state=TrialState.FAIL)
            state, epochs = FAILED, 0
        else:
            study.tell(trial, rec.value)
            state = COMPLETE
        predicted = TrialRecord.of(trial).finite("gate_predicted_objective")
        outcomes.append(Outcome(int(index), state, epochs, predicted))
    return OrderReplay(
        name,
        tuple(int(i) for i in order),
        tuple(outcomes),
        time.perf_counter() - start,
        time.process_time() - cpu,
    )


# ---------------------------------------------------------------------------- many orders

_WORKER_TABLE: Table | None = None
# One BLAS thread per worker process. The gate's GP works on matrices of tens of rows; with a
# BLAS thread pool per process, the processes' threads spin against each other (measured: 5x the
# CPU time of the energy pruner's replay with 2 processes on 2 cores, same decisions).
ONE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent died (killed, not interrupted) would wait for work forever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _init_worker(table: Table) -> None:
    global _WORKER_TABLE
    import threading

    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _WORKER_TABLE = table


def _replay_chunk(
    name: str, pruner_cfg: DictConfig, orders: Sequence[tuple[int, ...]]
) -> list[OrderReplay]:
    assert _WORKER_TABLE is not None
    return [replay_order(_WORKER_TABLE, pruner_cfg, o, name) for o in orders]


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def replay(
    table: Table,
    pruners: Mapping[str, DictConfig],
    orders: Sequence[Sequence[int]],
    processes: int = 1,
    progress: bool = False,
) -> dict[str, list[OrderReplay]]:
    """Every pruner (name -> config) on every order; ``processes`` > 1 spreads the (pruner,
    order) replays over that many worker processes. Results are in the order of ``orders``.
    ``progress``: a bar of the (pruner, order) replays on stderr, when it is a terminal."""
    from tqdm import tqdm

    orders = [tuple(int(i) for i in o) for o in orders]
    results: dict[str, list[OrderReplay]] = {name: [] for name in pruners}
    with tqdm(
        total=len(pruners) * len(orders),
        desc="replay",
        unit="order",
        disable=None if progress else True,
        leave=False,
    ) as bar:
        if processes <= 1:
            for name, cfg in pruners.items():
                for o in orders:
                    results[name].append(replay_order(table, cfg, o, name))
                    bar.update(1)
            return results
        return _replay_in_processes(table, pruners, orders, processes, results, bar)


def _replay_in_processes(
    table: Table,
    pruners: Mapping[str, DictConfig],
    orders: list[tuple[int, ...]],
    processes: int,
    results: dict[str, list[OrderReplay]],
    bar: Any,
) -> dict[str, list[OrderReplay]]:
    """``replay`` in ``processes`` worker processes, in chunks of orders; ``bar`` advances as
    each chunk's results arrive."""
    import multiprocessing

    size = max(1, math.ceil(len(orders) / (4 * processes)))  # small chunks balance the load
    chunks = [
        (name, cfg, orders[i : i + size])
        for name, cfg in pruners.items()
        for i in range(0, len(orders), size)
    ]
    saved = {key: os.environ.get(key) for key in ONE_THREAD_ENV}
    os.environ.update(ONE_THREAD_ENV)  # the workers inherit it before they load numpy
    try:
        with ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(table,),
        ) as pool:
            futures = [pool.submit(_replay_chunk, *chunk) for chunk in chunks]
            for (name, _, chunk), future in zip(chunks, futures):
                results[name].extend(future.result())
                bar.update(len(chunk))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return results


# ---------------------------------------------------------------------------- the numbers


def order_metrics(table: Table, result: OrderReplay) -> dict[str, Any]:
    """The replay's numbers for one order (see the module docstring)."""
    trials = table.trials
    values = [trials[i].value for i in result.order]
    best_none = max(values)
    none_pick = result.order[values.index(best_none)]
    kept = [o.index for o in result.outcomes if o.state == COMPLETE]
    pick = max(kept, key=lambda i: trials[i].value) if kept else None  # first of the best
    best = trials[pick].value if pick is not None else 0.0  # nothing found: all is lost
    regret = 100.0 * (best_none - best)
    pairs = [
        (o.predicted, trials[o.index].value) for o in result.outcomes if o.predicted is not None
    ]
    tau = kendall_tau([p for p, _ in pairs], [v for _, v in pairs]) if pairs else None
    none_pick_state = next(o.state for o in result.outcomes if o.index == none_pick)
    return {
        "ft_epochs": result.ft_epochs,
        "ft_epochs_vs_none": result.ft_epochs / (len(result.order) * table.ft_epochs),
        "best_val_acc": best,
        "regret_points": regret,
        "loses_over_1_point": regret > LOSS_POINTS,
        "picked_test_acc": trials[pick].test_acc if pick is not None else None,
        "none_pick_pruned": none_pick_state != COMPLETE,
        "pruned_gate": sum(o.state == PRUNED_GATE for o in result.outcomes),
        "pruned_ft": sum(o.state == PRUNED_FT for o in result.outcomes),
        "failed": sum(o.state == FAILED for o in result.outcomes),
        "gate_predictions": len(pairs),
        "kendall_tau": tau,
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
    }


SUMMARY_METRICS = (
    "ft_epochs_vs_none",
    "regret_points",
    "loses_over_1_point",
    "picked_test_acc",
    "none_pick_pruned",
    "pruned_gate",
    "pruned_ft",
    "failed",
    "kendall_tau",
    "best_val_acc",
)


def summarize(
    table: Table, results: Mapping[str, Sequence[OrderReplay]]
) -> dict[str, dict[str, Any]]:
    """Per pruner: each metric's mean and 95% interval over the orders ({mean, low, high, n};
    None where no order has it), regret's 95th percentile over orders, the replay seconds."""
    out: dict[str, dict[str, Any]] = {}
    for name, runs in results.items():
        rows = [order_metrics(table, r) for r in runs]
        summary: dict[str, Any] = {"orders": len(rows)}
        for key in SUMMARY_METRICS:
            values = [float(r[key]) for r in rows if r[key] is not None]
            interval = bootstrap_interval(values)
            summary[key] = (
                None
                if interval is None
                else dict(zip(("mean", "low", "high"), interval), n=len(values))
            )
        regrets = [r["regret_points"] for r in rows]
        summary["regret_points_p95"] = float(np.quantile(regrets, 0.95)) if regrets else None
        summary["seconds"] = sum(r["seconds"] for r in rows)
        summary["cpu_seconds"] = sum(r["cpu_seconds"] for r in rows)
        summary["per_order"] = rows
        out[name] = summary
    return out


# ---------------------------------------------------------------------------- the outputs


def _mean_ci(entry: Mapping[str, Any] | None, scale: float = 1.0, spec: str = ".2f") -> str:
    if entry is None:
        return MISSING
    return (
        f"{scale * entry['mean']:{spec}} [{scale * entry['low']:{spec}}, "
        f"{scale * entry['high']:{spec}}]"
    )


def summary_rows(summary: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """One row per pruner: the columns of ``HEADER``."""
    rows = []
    for name, s in summary.items():
        rows.append(
            [
                name,
                _mean_ci(s["ft_epochs_vs_none"]),
                _mean_ci(s["regret_points"]),
                f"{s['regret_points_p95']:.2f}",
                _mean_ci(s["loses_over_1_point"], 100, ".0f"),
                _mean_ci(s["picked_test_acc"], 100),
                _mean_ci(s["none_pick_pruned"], 100, ".0f"),
                f"{s['pruned_gate']['mean']:.1f} / {s['pruned_ft']['mean']:.1f}"
                + (f" (+{s['failed']['mean']:.1f} failed)" if s["failed"]["mean"] else ""),
                _mean_ci(s["kendall_tau"]),
                f"{s['seconds']:.1f} ({s['cpu_seconds']:.1f})",
            ]
        )
    return rows


HEADER = [
    "pruner",
    "FT epochs vs none",
    "regret (pts)",
    "regret p95 (pts)",
    "orders losing > 1 pt (%)",
    "test acc of pick (%)",
    "none's pick pruned (%)",
    "pruned gate / FT",
    "Kendall τ (gate)",
    "replay s (CPU s)",
]


# Each arm's main setting and the values its cost-vs-regret frontier sweeps (replay.frontier).
FRONTIER: dict[str, tuple[str, tuple[float, ...]]] = {
    "energy": ("min_prob", (0.01, 0.03, 0.05, 0.08, 0.12, 0.2)),
    "hp_rule": ("hp_quantile", (0.25, 0.4, 0.5, 0.6, 0.75, 0.9)),
    "epoch_rule": ("epoch_quantile", (0.25, 0.4, 0.5, 0.6, 0.75, 0.9)),
    "rules": ("epoch_quantile", (0.25, 0.4, 0.5, 0.6, 0.75, 0.9)),
}


def frontier_arms(pruners: Mapping[str, DictConfig]) -> dict[str, DictConfig]:
    """Every arm as given, then each arm that has a main setting (``FRONTIER``; ``energy+FT``
    arms are ``energy``'s) at every value of it, named ``ARM key=value``."""
    arms = dict(pruners)
    for name, cfg in pruners.items():
        key, values = FRONTIER.get(name.partition("+")[0], ("", ()))
        for value in values:
            point = cfg.copy()
            point.pruner[key] = value
            arms[f"{name} {key}={value:g}"] = point
    return arms


def cost_vs_regret(summary: Mapping[str, Mapping[str, Any]]) -> plots.Figure:
    """Each pruner's mean FT-epoch fraction against its mean regret, with the 95% intervals;
    the points of an arm's frontier (``ARM key=value``) joined by a line, in cost order."""
    fig = plots.Figure(
        "replay_cost_vs_regret",
        "Replay: cost vs regret per pruner",
        "FT epochs run, fraction of no pruning",
        "regret (points of FT val acc)",
    )
    lines: dict[str, list[str]] = {}
    for name in summary:
        arm, _, setting = name.partition(" ")
        if setting:
            lines.setdefault(arm, []).append(name)
    for name, s in summary.items():
        if " " in name:
            continue
        c, r = s["ft_epochs_vs_none"], s["regret_points"]
        fig.series.append(
            plots.Series(
                name,
                [c["mean"]],
                [r["mean"]],
                hover=[name],
                x_interval=[(c["low"], c["high"])],
                y_interval=[(r["low"], r["high"])],
            )
        )
    for arm, names in lines.items():
        names = sorted(names, key=lambda n: summary[n]["ft_epochs_vs_none"]["mean"])
        fig.series.append(
            plots.Series(
                f"{arm} frontier ({names[0].partition(' ')[2].partition('=')[0]})",
                [summary[n]["ft_epochs_vs_none"]["mean"] for n in names],
                [summary[n]["regret_points"]["mean"] for n in names],
                kind="lines+markers",
                dash=arm != "energy" and not arm.startswith("energy+"),
                hover=names,
            )
        )
    fig.note = (
        "mean over the orders; bars: 95% bootstrap intervals of the mean; lines: each arm over "
        "its main setting"
    )
    return fig


def replay_markdown(
    table: Table,
    settings: Mapping[str, Any],
    summary: Mapping[str, Mapping[str, Any]],
    figure: plots.Figure,
) -> str:
    spread = table.spread()
    left = ", ".join(f"{n} {why}" for why, n in table.left_out.items()) or "none"
    tests = [t.test_acc for t in table.trials if t.test_acc is not None]
    out = [
        f"# Replay of study `{table.study_name}`",
        "",
        f"Storage `{settings['storage']}`. {len(table.trials)} complete trials × "
        f"{table.ft_epochs} FT epochs (left out: {left}); objective (FT validation accuracy) "
        f"best {spread['best']:.4f}, median {spread['median']:.4f}, worst "
        f"{spread['worst']:.4f}"
        + (f"; test accuracy best {max(tests):.4f}" if tests else "")
        + ".",
        "",
        f"{settings['orders']} random orders of {settings['budget']} trials (seed "
        f"{settings['seed']}); each pruner replayed on every order through the live trial's "
        "gate and FT-epoch calls. Entries: mean over the orders [95% bootstrap interval of "
        "the mean]. Regret: the order's best objective minus the best the pruner kept, in "
        "points; none's pick: the trial the order would select without pruning.",
        "",
    ]
    out += markdown_table(HEADER, summary_rows(summary))
    out += ["", "## Pruner settings", ""]
    for name, p in settings["pruners"].items():
        out.append(f"- `{name}`: " + ", ".join(f"{k}={v}" for k, v in p.items()))
    out += [
        "",
        f"Replay wall time {settings['wall_s']:.1f} s with {settings['processes']} "
        "process(es); `replay s (CPU s)`: wall and CPU time spent replaying each pruner, "
        "summed over the orders.",
        "",
        f"![{figure.title}]({figure.stem}.png) (interactive: "
        f"[`{figure.stem}.html`]({figure.stem}.html))",
        "",
    ]
    return "\n".join(out)


def pruner_settings(cfg: DictConfig) -> dict[str, Any]:
    """The pruner keys that matter for ``cfg.pruner.name`` (and its ``ft`` pruner)."""
    p = OmegaConf.to_container(cfg.pruner, resolve=True)
    assert isinstance(p, dict)
    keep = {
        "none": (),
        "model": (),
        "median": ("n_startup_trials", "n_warmup_steps"),
        "hyperband": ("min_resource", "reduction_factor"),
        "hp_rule": ("n_startup_trials", "hp_quantile"),
        "epoch_rule": ("n_startup_trials", "epoch_quantile", "epoch"),
        "rules": ("n_startup_trials", "hp_quantile", "epoch_quantile", "epoch"),
    }
    if p["name"] == "energy":
        keys = [
            "ft",
            "n_startup_trials",
            "top_k",
            "min_prob",
            "energy_min",
            "energy_max",
            "signals",
            "params",
            "prior_studies",
        ] + (["curve_signals"] if p["ft"] == "model" else list(keep[p["ft"]]))
    else:
        keys = list(keep[p["name"]])
    return {k: p[k] for k in dict.fromkeys(keys)}


def run_replay(
    table: Table,
    pruners: Mapping[str, DictConfig],
    orders: int,
    budget: int,
    seed: int,
    processes: int,
    progress: bool = False,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Draw the orders and replay every pruner on them; (settings, summary)."""
    check_budget(table, budget)
    drawn = draw_orders(len(table.trials), orders, budget, seed)
    start = time.perf_counter()
    results = replay(table, pruners, drawn, processes, progress)
    settings = {
        "study": table.study_name,
        "trials": len(table.trials),
        "ft_epochs": table.ft_epochs,
        "left_out": dict(table.left_out),
        "spread": table.spread(),
        "orders": orders,
        "budget": budget,
        "seed": seed,
        "processes": processes,
        "wall_s": time.perf_counter() - start,
        "pruners": {name: pruner_settings(cfg) for name, cfg in pruners.items()},
        "optuna": optuna.__version__,
    }
    return settings, summarize(table, results)


def write_replay(cfg: DictConfig, pruners: Mapping[str, DictConfig]) -> Path:
    """``mode=replay``: replay ``pruners`` (name -> config with that pruner) on study
    ``study.name``; write replay.md, replay.json and the figure; return their folder."""
    url, name = str(cfg.storage.url), str(cfg.study.name)
    study = load_existing_study(url, name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    r = cfg.replay
    table = load_table(study, skip_pruned=bool(r.skip_pruned))
    budget = resolve_budget(table, r.budget)
    processes = int(r.processes) or available_cpus()
    log.info(
        "replaying %s on %d orders of %d of the %d complete trials of study %r (%d processes)",
        ", ".join(pruners),
        r.orders,
        budget,
        len(table.trials),
        name,
        processes,
    )
    if r.frontier:
        pruners = frontier_arms(pruners)
    settings, summary = run_replay(
        table, pruners, int(r.orders), budget, int(r.seed), processes, bool(cfg.progress)
    )
    settings["storage"] = safe_url(url)
    out = Path(str(cfg.storage.reports)) / name
    out.mkdir(parents=True, exist_ok=True)
    figure = cost_vs_regret(summary)
    plots.write_png(figure, out / f"{figure.stem}.png")
    plots.write_html(figure, out / f"{figure.stem}.html")
    (out / REPLAY_MD).write_text(
        replay_markdown(table, settings, summary, figure), encoding="utf-8"
    )
    (out / REPLAY_JSON).write_text(
        json.dumps({"settings": settings, "pruners": summary}, indent=1), encoding="utf-8"
    )
    print("\n".join(markdown_table(HEADER, summary_rows(summary))))
    print(
        f"replay of {len(table.trials)} trials, {r.orders} orders x {budget} trials: "
        f"{settings['wall_s']:.1f} s; {out / REPLAY_MD}"
    )
    return out
