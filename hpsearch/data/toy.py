"""The toy experiment's pretraining: the vector backbone learns the synthetic source task."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from hpsearch.data.datasets import make_synthetic_tasks
from hpsearch.models import new_backbone, output_width

SOURCE_LR = 1e-2  # Adam; 30 epochs of 2,000 samples reach ~90% source accuracy on the default task
SOURCE_BATCH = 128


def pretrain_source_backbone(data_cfg: DictConfig, bb_cfg: DictConfig) -> nn.Module:
    """A backbone trained (with a throwaway linear head) on the toy's source task; deterministic."""
    tasks = make_synthetic_tasks(data_cfg)
    source = tasks.source
    s = data_cfg.synthetic
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(s.seed))
        backbone = new_backbone(bb_cfg, int(s.input_dim))
        head = nn.Linear(output_width(bb_cfg, int(s.input_dim)), int(s.n_classes))
        params = list(backbone.parameters()) + list(head.parameters())
        optimizer = torch.optim.Adam(params, lr=SOURCE_LR)
        gen = torch.Generator().manual_seed(int(s.seed))
        for _ in range(int(s.source_epochs)):
            order = torch.randperm(len(source), generator=gen)
            for i in range(0, len(order), SOURCE_BATCH):
                idx = order[i : i + SOURCE_BATCH]
                loss = F.cross_entropy(head(backbone(source.x[idx])), source.y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    for p in backbone.parameters():
        p.requires_grad_(True)
    return backbone
