"""One trial: head probing -> energy and HP metrics -> pruning gate -> finetuning -> adaptation.

``Objective`` (``objective``) runs it; ``Workspace`` (``workspace``) holds what a worker's trials
share; ``records`` names every user attr a trial writes; ``hp``, ``gate``, ``ft``, ``metrics``,
``checkpoints`` and ``optim`` are the steps and their parts; ``ntk`` checks the first-order
feature-change equation the energy comes from.
"""

from hpsearch.trial.objective import Objective
from hpsearch.trial.records import METRICS, set_attrs
from hpsearch.trial.workspace import Workspace

__all__ = ["METRICS", "Objective", "Workspace", "set_attrs"]
