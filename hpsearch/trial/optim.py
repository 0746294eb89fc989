"""Pieces both training phases share: optimisers and shuffled mini-batch indices."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from omegaconf import DictConfig


def make_optimizer(
    params: Iterable[torch.nn.Parameter], phase: DictConfig
) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum), Adam or AdamW from a phase config (hp or ft)."""
    params = [p for p in params if p.requires_grad]
    if phase.optimizer == "sgd":
        momentum = float(phase.momentum)
        return torch.optim.SGD(
            params,
            lr=float(phase.lr),
            momentum=momentum,
            nesterov=momentum > 0,
            weight_decay=float(phase.weight_decay),
        )
    if phase.optimizer == "adam":
        return torch.optim.Adam(params, lr=float(phase.lr), weight_decay=float(phase.weight_decay))
    return torch.optim.AdamW(params, lr=float(phase.lr), weight_decay=float(phase.weight_decay))


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped; at least one batch)."""
    return max(1, n // batch_size)


def epoch_batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index batches for one epoch."""
    order = torch.randperm(n, generator=gen)
    size = min(batch_size, n)
    for step in range(steps_per_epoch(n, batch_size)):
        yield order[step * size : (step + 1) * size]
