"""Pruners of hpsearch studies, in Optuna's style: one class per private module.

``EnergyPruner`` decides at the gate between head probing and finetuning, from the HP-phase
signals (energy, HP accuracy and loss, head norm, schedule), and hands the FT epochs to a wrapped
Optuna pruner. ``make_pruner`` builds the study's pruner from ``cfg.pruner``.
"""

from hpsearch.pruners._decision import (
    DECISION_ATTRS,
    FAIL,
    KEEP,
    PRUNE,
    GateDecision,
    InvalidSignalError,
)
from hpsearch.pruners._energy import SIGNALS, EnergyPruner
from hpsearch.pruners._factory import epoch_pruner, make_pruner
from hpsearch.pruners._rules import QuantileRulePruner

__all__ = [
    "DECISION_ATTRS",
    "SIGNALS",
    "EnergyPruner",
    "FAIL",
    "KEEP",
    "PRUNE",
    "QuantileRulePruner",
    "GateDecision",
    "InvalidSignalError",
    "epoch_pruner",
    "make_pruner",
]
