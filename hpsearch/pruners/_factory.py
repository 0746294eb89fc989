"""The study's pruner, built from ``cfg.pruner``."""
from __future__ import annotations

import optuna
from omegaconf import DictConfig

from hpsearch.config import GATE_SIGNALS
from hpsearch.pruners._energy import EnergyPruner


def make_pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    """The study's pruner; its FT-epoch pruners see FT validation accuracy at steps 1..ft.epochs.

    ``pruner=energy`` decides at the gate before FT and hands the FT epochs to ``pruner.ft``.
    """
    p = cfg.pruner
    if p.name == "energy":
        return EnergyPruner(epoch_pruner(str(p.ft), cfg),
                            n_startup_trials=int(p.n_startup_trials), top_k=int(p.top_k),
                            min_prob=float(p.min_prob),
                            energy_min=p.energy_min,
                            energy_max=p.energy_max,
                            signals=tuple(p.signals) if p.signals is not None else GATE_SIGNALS)
    return epoch_pruner(str(p.name), cfg)


def epoch_pruner(name: str, cfg: DictConfig) -> optuna.pruners.BasePruner:
    """A pruner of FT epochs by name (none, median, hyperband), set from ``cfg.pruner``."""
    p = cfg.pruner
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(p.n_startup_trials),
                                           n_warmup_steps=int(p.n_warmup_steps))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=int(p.min_resource),
                                              max_resource=max(1, int(cfg.ft.epochs)),
                                              reduction_factor=int(p.reduction_factor))
    return optuna.pruners.NopPruner()
