"""The report's figures: built once as plain data, drawn as a PNG (matplotlib) and as HTML (plotly).

A ``Figure`` says what to draw (series of points, axis labels, a note); ``write_png`` and
``write_html`` draw it, so the static and the interactive plot always show the same numbers.
The builders below turn a study's trials into the five figures of the report; each works with
any mix of complete, pruned, failed and running trials, and with none at all (an empty figure
whose note says why).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpsearch.record import TrialRecord, schedule_text

PNG_SIZE_IN = (7.0, 4.5)
PNG_DPI = 120
# Distinct ε values up to this many get a line each; more (a continuous ε) are binned.
MAX_EXACT_EPS = 3
EPS_BINS = 3


@dataclass
class Series:
    """One set of points. ``kind``: markers, lines, lines+markers, or barh (y holds labels)."""

    name: str
    x: list[float]
    y: list[Any]
    kind: str = "markers"
    marker: str = "circle"  # circle | x
    dash: bool = False
    hover: list[str] | None = None  # one label per point, for the HTML
    # optional interval per point (error bars): each a (low, high) pair around x or y
    x_interval: list[tuple[float, float]] | None = None
    y_interval: list[tuple[float, float]] | None = None

    def errors(self, axis: str) -> tuple[list[float], list[float]] | None:
        """(below, above) distances of the ``axis`` interval from each point, or None."""
        interval, values = (self.x_interval, self.x) if axis == "x" else (self.y_interval, self.y)
        if interval is None:
            return None
        return (
            [v - lo for v, (lo, _) in zip(values, interval)],
            [hi - v for v, (_, hi) in zip(values, interval)],
        )


@dataclass
class Figure:
    """A plot: written as ``<stem>.png`` and ``<stem>.html`` by the report."""

    stem: str
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    note: str = ""  # printed under the title; says why a figure is empty

    @property
    def empty(self) -> bool:
        return not any(s.x for s in self.series)


def write_png(fig: Figure, path: Path) -> None:
    """Draw with matplotlib's Agg canvas (no pyplot, no display, no global backend switch)."""
    from matplotlib.figure import Figure as MplFigure

    mpl = MplFigure(figsize=PNG_SIZE_IN, dpi=PNG_DPI, layout="constrained")
    ax = mpl.subplots()
    for s in fig.series:
        if s.kind == "barh":
            ax.barh(list(s.y), s.x, label=s.name)
            ax.invert_yaxis()  # most important on top
            continue
        style = "--" if s.dash else "-"
        marker = "x" if s.marker == "x" else "o"
        if s.x_interval is not None or s.y_interval is not None:
            ax.errorbar(
                s.x,
                s.y,
                xerr=s.errors("x"),
                yerr=s.errors("y"),
                marker=marker,
                linestyle="none" if s.kind == "markers" else style,
                capsize=3,
                label=s.name,
            )
        elif s.kind == "markers":
            ax.plot(s.x, s.y, linestyle="none", marker=marker, label=s.name)
        elif s.kind == "lines":
            ax.plot(s.x, s.y, linestyle=style, label=s.name)
        else:
            ax.plot(s.x, s.y, linestyle=style, marker=marker, label=s.name)
    title = fig.title + (f"\n{fig.note}" if fig.note else "")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(fig.xlabel)
    ax.set_ylabel(fig.ylabel)
    ax.grid(alpha=0.3)
    if fig.empty:
        ax.text(
            0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="gray"
        )
    elif any(s.kind != "barh" for s in fig.series):
        ax.legend(fontsize=8)
    mpl.savefig(path)


def write_html(fig: Figure, path: Path) -> None:
    """Draw with plotly. plotly.js is written once next to the file (``plotly.min.js``), so the
    page works offline and the report folder stays small."""
    import plotly.graph_objects as go

    pfig = go.Figure()
    for s in fig.series:
        if s.kind == "barh":
            pfig.add_trace(go.Bar(x=s.x, y=list(s.y), orientation="h", name=s.name))
            pfig.update_yaxes(autorange="reversed")
            continue
        pfig.add_trace(
            go.Scatter(
                x=s.x,
                y=s.y,
                mode=s.kind,
                name=s.name,
                text=s.hover,
                hoverinfo="text+x+y" if s.hover else "x+y",
                marker={"symbol": "x" if s.marker == "x" else "circle", "size": 9},
                line={"dash": "dash" if s.dash else "solid"},
                error_x=_plotly_errors(s.errors("x")),
                error_y=_plotly_errors(s.errors("y")),
            )
        )
    title = fig.title + (f"<br><sub>{fig.note}</sub>" if fig.note else "")
    pfig.update_layout(
        title=title, xaxis_title=fig.xlabel, yaxis_title=fig.ylabel, template="plotly_white"
    )
    if fig.empty:
        pfig.add_annotation(
            text="no data yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5
        )
    pfig.write_html(str(path), include_plotlyjs="directory", full_html=True)


def _plotly_errors(errors: tuple[list[float], list[float]] | None) -> dict[str, Any] | None:
    if errors is None:
        return None
    below, above = errors
    return {"type": "data", "symmetric": False, "array": above, "arrayminus": below}


# ---------------------------------------------------------------------------- the figures


def _complete(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]


def _records(trials: Sequence[FrozenTrial]) -> list[tuple[FrozenTrial, TrialRecord]]:
    return [(t, TrialRecord.of(t)) for t in trials]


def schedule_label(t: FrozenTrial) -> str:
    """Trial number and schedule, one line, for hover labels."""
    return f"trial {t.number} {schedule_text(TrialRecord.of(t))}"


def _eps_groups(values: list[float]) -> list[tuple[float, float, str]]:
    """(low, high, label) ranges of ε: exact values when few, else equal-width bins."""
    distinct = sorted(set(values))
    if len(distinct) <= MAX_EXACT_EPS:
        return [(v, v, f"ε={v:.2f}") for v in distinct]
    lo, hi = distinct[0], distinct[-1]
    step = (hi - lo) / EPS_BINS
    edges = [lo + i * step for i in range(EPS_BINS)] + [hi]
    return [
        (
            edges[i],
            edges[i + 1],
            f"ε∈[{edges[i]:.2f}, {edges[i + 1]:.2f}" + ("]" if i == EPS_BINS - 1 else ")"),
        )
        for i in range(EPS_BINS)
    ]


def ft_acc_vs_tau(trials: Sequence[FrozenTrial]) -> Figure:
    """FT validation accuracy against the HP epochs τ: one line per head depth and ε group,
    through one point per τ (the mean of the group's trials with that τ, a bar from their lowest
    to their highest), so trials that share a τ never make the line jump up and down."""
    fig = Figure(
        "ft_acc_vs_tau",
        "FT validation accuracy vs HP epochs τ",
        "HP epochs τ",
        "FT validation accuracy",
    )
    done = [(t, r) for t, r in _records(_complete(trials)) if r.finite("tau") is not None]
    eps = [r.label_smoothing or 0.0 for _, r in done]
    groups = _eps_groups(eps) if eps else []
    shared = False  # some trials of one line share a τ
    for depth in sorted({r.head_depth or 1 for _, r in done}):
        for i, (lo, hi, label) in enumerate(groups):
            last = i == len(groups) - 1
            members = [
                (t, r)
                for (t, r), e in zip(done, eps)
                if (r.head_depth or 1) == depth
                and lo <= e
                and (e <= hi if last or lo == hi else e < hi)
            ]
            if members:
                fig.series.append(_per_tau(f"depth {depth}, {label}", members))
                shared |= len(fig.series[-1].x) < len(members)
    if not done:
        fig.note = "no complete trial yet"
    elif shared:
        fig.note = "trials that share a τ: their mean, a bar from the lowest to the highest"
    return fig


def _per_tau(name: str, members: Sequence[tuple[FrozenTrial, TrialRecord]]) -> Series:
    """One point per τ: the mean objective of ``members`` with that τ, their range as a bar."""
    by_tau: dict[int, list[FrozenTrial]] = {}
    for t, r in sorted(members, key=lambda tr: (tr[1].tau, tr[0].number)):
        by_tau.setdefault(r.tau, []).append(t)
    taus = sorted(by_tau)
    values = [[float(t.value) for t in by_tau[tau]] for tau in taus]
    return Series(
        name,
        taus,
        [sum(v) / len(v) for v in values],
        kind="lines+markers",
        hover=["; ".join(schedule_label(t) for t in by_tau[tau]) for tau in taus],
        y_interval=[(min(v), max(v)) for v in values],
    )


def energy_vs_adaptation(
    trials: Sequence[FrozenTrial], c_hat: float | None, rho: float | None
) -> Figure:
    """Energy after HP against feature adaptation ‖z_T − z_0‖, with the line ĉ · energy."""
    fig = Figure(
        "energy_vs_adaptation",
        "Energy after HP vs feature adaptation",
        "energy  E‖e_y − q_0‖",
        "adaptation  ‖z_T − z_0‖",
    )
    done = [
        (t, r)
        for t, r in _records(_complete(trials))
        if r.finite("energy") is not None and r.finite("adaptation_l2") is not None
    ]
    if done:
        fig.series.append(
            Series(
                "complete trials",
                [r.energy for _, r in done],
                [r.adaptation_l2 for _, r in done],
                hover=[schedule_label(t) for t, _ in done],
            )
        )
    if c_hat is not None and done:
        top = max(r.energy for _, r in done)
        fig.series.append(
            Series(
                f"ĉ · energy (ĉ={c_hat:.3g})",
                [0.0, top],
                [0.0, c_hat * top],
                kind="lines",
                dash=True,
            )
        )
    notes = []
    if c_hat is not None:
        notes.append(f"ĉ = {c_hat:.3g}")
    if rho is not None:
        notes.append(f"Spearman ρ = {rho:.3f}")
    fig.note = ", ".join(notes) if notes else "no complete trial with energy and adaptation yet"
    return fig


def energy_vs_ft_acc(trials: Sequence[FrozenTrial]) -> Figure:
    """Energy against FT validation accuracy; pruned trials at their last reported accuracy."""
    fig = Figure(
        "energy_vs_ft_acc",
        "Energy after HP vs FT validation accuracy",
        "energy  E‖e_y − q_0‖",
        "FT validation accuracy",
    )
    done = [(t, r) for t, r in _records(_complete(trials)) if r.finite("energy") is not None]
    if done:
        fig.series.append(
            Series(
                "complete",
                [r.energy for _, r in done],
                [t.value for t, _ in done],
                hover=[schedule_label(t) for t, _ in done],
            )
        )
    pruned = [
        (t, r)
        for t, r in _records(trials)
        if t.state == TrialState.PRUNED and r.finite("energy") is not None and t.intermediate_values
    ]
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t, _ in pruned]
        fig.series.append(
            Series(
                "pruned (last FT epoch reached)",
                [r.energy for _, r in pruned],
                last,
                marker="x",
                hover=[f"{schedule_label(t)} pruned at {r.pruned_at or '?'}" for t, r in pruned],
            )
        )
    gate = sum(1 for t in trials if t.state == TrialState.PRUNED and not t.intermediate_values)
    if gate:
        fig.note = f"{gate} trial(s) pruned before FT have no FT accuracy and are not shown"
    elif not done and not pruned:
        fig.note = "no trial with energy and FT accuracy yet"
    return fig


def optimization_history(trials: Sequence[FrozenTrial]) -> Figure:
    """FT validation accuracy per trial number and the best so far."""
    fig = Figure(
        "optimization_history", "Optimisation history", "trial number", "FT validation accuracy"
    )
    done = sorted(_complete(trials), key=lambda t: t.number)
    if not done:
        fig.note = "no complete trial yet"
        return fig
    fig.series.append(
        Series(
            "trial",
            [t.number for t in done],
            [t.value for t in done],
            hover=[schedule_label(t) for t in done],
        )
    )
    best, running = [], -math.inf
    for t in done:
        running = max(running, float(t.value))
        best.append(running)
    fig.series.append(Series("best so far", [t.number for t in done], best, kind="lines"))
    return fig


def param_importances(importances: Mapping[str, float] | None, why_not: str = "") -> Figure:
    """Horizontal bars of optuna's parameter importances, or an empty figure saying why not."""
    fig = Figure(
        "param_importances",
        "Parameter importances (FT validation accuracy)",
        "importance",
        "parameter",
    )
    if importances:
        names = sorted(importances, key=importances.get, reverse=True)
        fig.series.append(
            Series("importance", [float(importances[n]) for n in names], names, kind="barh")
        )
    else:
        fig.note = why_not or "not computed"
    return fig
