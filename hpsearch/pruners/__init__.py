"""Pruners of hpsearch studies, in Optuna's style: one class per private module, no config.

``EnergyPruner`` asks one model at the gate between head probing and finetuning (the HP-phase
signals: energy, HP accuracy and loss, schedule) and after every FT epoch (the signals and the FT
curve so far) how likely the trial is to end among the best; ``QuantileRulePruner`` is the
model-free baseline (keep a trial whose HP accuracy, or accuracy after one FT epoch, is at least a
running quantile of those seen). Each pruner owns its defaults and checks its arguments (a
``ValueError`` that starts with the argument's name); ``hpsearch.study.pruning`` builds the
study's pruner from ``cfg.pruner``. A gate's decision reaches the trial through
``take_decision``.
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
from hpsearch.pruners._rules import QuantileRulePruner
from hpsearch.pruners._signals import CURVE_SIGNALS, GATE_PARAMS, GATE_SIGNALS, HP_SIGNALS, SIGNALS

__all__ = [
    "CURVE_SIGNALS",
    "DECISION_ATTRS",
    "GATE_PARAMS",
    "GATE_SIGNALS",
    "HP_SIGNALS",
    "SIGNALS",
    "EnergyPruner",
    "GateAction",
    "GateDecision",
    "InvalidSignalError",
    "QuantileRulePruner",
    "RecordsDecisions",
    "take_decision",
]
