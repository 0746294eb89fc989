"""Recorded studies made in the test, for replay: trials with FT curves and HP signals, stored
through optuna's own API (no training)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

FT_LR = FloatDistribution(1e-4, 1.0, log=True)


def signals(i: int, value: float) -> dict[str, float]:
    """HP signals of trial ``i`` whose FT objective is ``value``: the energy and HP accuracy
    follow the objective (so a predictor can learn it), the rest vary with ``i``."""
    return {
        "energy": 0.2 + 0.5 * value,
        "hp_train_acc": 0.3 + 0.6 * value,
        "hp_train_loss": 2.0 - value,
        "hp_val_acc": 0.25 + 0.6 * value,
        "head_norm": 1.0 + 0.1 * (i % 7),
        "tau": float(i % 5),
        "label_smoothing": 0.0,
        "head_depth": 1 + i % 2,
        "layers_copied": 1,
        "hp_lr": 0.01 * (1 + i % 3),
        "ft_lr": 0.001 * (1 + i % 11),
        "seed": i,
        "schedule": "none",
    }


def smooth_curve(value: float, epochs: int) -> list[float]:
    """An FT curve rising to ``value`` after ``epochs`` epochs."""
    return [value * (1 - 0.5 ** (e + 1)) / (1 - 0.5 ** (epochs + 1)) for e in range(epochs)]


def add_trial(
    study: optuna.Study,
    i: int,
    curve: Sequence[float],
    state: TrialState = TrialState.COMPLETE,
    test_acc: float | None = None,
    **extra_attrs: object,
) -> None:
    value = curve[-1] if curve else math.nan
    attrs = {**signals(i, value if curve else 0.5), "ft_epochs_run": len(curve), **extra_attrs}
    if test_acc is not None:
        attrs["test_acc"] = test_acc
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=value if state == TrialState.COMPLETE else None,
            params={"ft.lr": attrs["ft_lr"]},
            distributions={"ft.lr": FT_LR},
            user_attrs=attrs,
            intermediate_values={e + 1: v for e, v in enumerate(curve)},
        )
    )


def make_table_study(url: str, name: str, values: Sequence[float], epochs: int = 3) -> optuna.Study:
    """A study of complete trials with these objectives, each with a smooth curve and a test
    accuracy a point below its validation accuracy."""
    study = optuna.create_study(storage=url, study_name=name, direction="maximize")
    for i, v in enumerate(values):
        add_trial(study, i, smooth_curve(v, epochs), test_acc=v - 0.01)
    return study


def spread_values(n: int) -> list[float]:
    """``n`` objectives spread over [0.3, 0.95] in a scrambled order."""
    return [0.3 + 0.65 * ((i * 37) % n) / max(1, n - 1) for i in range(n)]
