"""Pruners of hpsearch studies, in Optuna's style: one class per private module, no config.

``EnergyPruner`` decides at the gate between head probing and finetuning, from the HP-phase
signals (energy, HP accuracy and loss, head norm, schedule), and hands the FT epochs to a wrapped
Optuna pruner. Each pruner owns its defaults and checks its arguments (a ``ValueError`` that
starts with the argument's name); ``hpsearch.study.pruning`` builds the study's pruner from
``cfg.pruner``. A gate's decision reaches the trial through ``take_decision``.
"""

from hpsearch.pruners._decision import (
    DECISION_ATTRS,
    GateAction,
    GateDecision,
    InvalidSignalError,
    RecordsDecisions,
    take_decision,
)
from hpsearch.pruners._energy import EnergyPruner
from hpsearch.pruners._signals import GATE_SIGNALS, HP_SIGNALS, SIGNALS

__all__ = [
    "DECISION_ATTRS",
    "GATE_SIGNALS",
    "HP_SIGNALS",
    "SIGNALS",
    "EnergyPruner",
    "GateAction",
    "GateDecision",
    "InvalidSignalError",
    "RecordsDecisions",
    "take_decision",
]
