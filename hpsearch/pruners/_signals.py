"""The HP-phase signals a gate may read: trial user attrs set after head probing, before FT."""

from __future__ import annotations

import math
from collections.abc import Callable

# Every signal a gate may read (its ``signals`` argument), and how a predictor sees it. The
# learning rates are searched on a log scale, so the predictor sees them on one too; the HP loss
# and the head's norm span orders of magnitude (a diverging HP reaches 1e16), so they are logged.
HP_SIGNALS = (
    "energy",
    "hp_train_acc",
    "hp_train_loss",
    "hp_val_acc",
    "head_norm",
    "tau",
    "label_smoothing",
    "head_depth",
    "layers_copied",
    "hp_lr",
    "ft_lr",
)
_LOG_SCALED = ("hp_lr", "ft_lr", "hp_train_loss", "head_norm")
SIGNALS: dict[str, Callable[[float], float]] = {
    name: (lambda v: math.log(v) if v > 0 else math.nan) if name in _LOG_SCALED else float
    for name in HP_SIGNALS
}
# The ones the energy gate reads by default: what head probing measured (the energy, the HP
# validation accuracy) and the schedule setting head probing does not see (the FT learning rate).
# Chosen by replay on the five tables (docs/energy-pruner.md): the HP train loss and the copied
# stages added nothing but noise with 5-40 completed trials.
GATE_SIGNALS = ("energy", "hp_val_acc", "ft_lr")
# What the model reads after an FT epoch besides the FT accuracy there: the FT learning rate (a
# small one starts slowly and ends high). Chosen by replay too.
CURVE_SIGNALS = ("ft_lr",)
# The searched categorical parameters the gate reads besides the signals (pruner.params, e.g.
# backbone.name): none by default. Replayed on the two backbone-search tables the backbone's
# record as an input raised the regret (random table 0.32 -> 0.62 points at the same cost) and
# did not lower the cost: the HP validation accuracy already tells the backbones apart
# (docs/energy-pruner.md).
GATE_PARAMS: tuple[str, ...] = ()
