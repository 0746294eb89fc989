"""The report's τ figure: trials that share a τ become one point (their mean, a bar over their
range), so a line only moves along τ and never jumps up and down at one τ."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from hpsearch.review import plots


def _trial(number: int, tau: int, value: float, eps: float = 0.0, depth: int = 1):
    trial = optuna.trial.create_trial(
        value=value,
        user_attrs={"tau": tau, "label_smoothing": eps, "head_depth": depth},
    )
    trial.number = number
    return trial


def test_trials_sharing_a_tau_are_one_point_with_their_range(tmp_path: Path) -> None:
    trials = [
        _trial(0, 8, 0.90),
        _trial(1, 2, 0.80),
        _trial(2, 8, 0.70),
        _trial(3, 8, 0.80),
        _trial(4, 4, 0.85),
        _trial(5, 4, 0.75, depth=2),
    ]
    fig = plots.ft_acc_vs_tau(trials)
    one, two = fig.series
    assert one.name == "depth 1, ε=0.00" and two.name == "depth 2, ε=0.00"
    assert one.x == [2, 4, 8]  # strictly increasing: no vertical zig-zag
    assert one.y == pytest.approx([0.80, 0.85, 0.80])
    assert one.y_interval == pytest.approx([(0.80, 0.80), (0.85, 0.85), (0.70, 0.90)])
    assert one.hover is not None and one.hover[2].count("trial ") == 3
    assert (two.x, two.y) == ([4], [0.75])
    assert "share a τ" in fig.note
    plots.write_png(fig, tmp_path / "tau.png")
    plots.write_html(fig, tmp_path / "tau.html")
    assert (tmp_path / "tau.png").stat().st_size > 5_000
    assert "0.7" in (tmp_path / "tau.html").read_text()


def test_distinct_taus_need_no_note_and_no_trials_say_so() -> None:
    fig = plots.ft_acc_vs_tau([_trial(0, 1, 0.5), _trial(1, 3, 0.6)])
    assert fig.series[0].x == [1, 3] and fig.note == ""
    assert plots.ft_acc_vs_tau([]).note == "no complete trial yet"
