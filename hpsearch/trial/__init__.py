"""One trial: head probing -> energy and HP metrics -> pruning gate -> finetuning -> adaptation.

``Objective`` (``objective``) runs it; ``Workspace`` (``workspace``) holds what a worker's trials
share; ``records`` names every user attr a trial writes; ``hp``, ``gate``, ``ft``, ``metrics``,
``checkpoints`` and ``optim`` are the steps and their parts; ``ntk`` checks the first-order
feature-change equation the energy comes from.
"""

from __future__ import annotations

from typing import Any

from hpsearch.trial.records import METRICS, set_attrs

__all__ = ["METRICS", "Objective", "Workspace", "set_attrs"]


def __getattr__(name: str) -> Any:
    """``Objective`` and ``Workspace`` import torch: only when asked for, so that reading a
    trial's records (the config checks, the report) does not load it."""
    if name == "Objective":
        from hpsearch.trial.objective import Objective

        return Objective
    if name == "Workspace":
        from hpsearch.trial.workspace import Workspace

        return Workspace
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
