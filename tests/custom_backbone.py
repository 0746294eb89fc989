"""Factories for ``backbone._target_`` in the tests: one that follows the backbone protocol and a
few that break it (importable as ``custom_backbone.NAME``; tests/ is on the path)."""

from __future__ import annotations

import torch
from torch import nn


class TwoConv(nn.Module):
    """Two conv stages; z = spatial max (its own pool); preprocessing of its own."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU()),
            ]
        )
        self.input_spec = {"input_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3}
        self.conv = True

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        return h.amax(dim=(2, 3)) if h.dim() == 4 else h


def make_two_conv(width: int = 4) -> TwoConv:
    return TwoConv(width)


def make_without_stages() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3))


def make_bad_pool() -> nn.Module:
    module = TwoConv(4)
    module.pool = lambda h: h  # returns the (N, C, H, W) map, not (N, D)
    return module


def make_bad_spec() -> nn.Module:
    module = TwoConv(4)
    module.input_spec = {"input_size": 16, "mean": [0.5], "std": [0.25] * 3}
    return module
