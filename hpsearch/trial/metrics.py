"""What a trial measures: energy, accuracy and loss of a head, and feature adaptation.

Energy (Ren et al., 2023) is the size of the push the labels give the features when FT starts:
mean over samples of ||e_y - q_0(x)||_2, with q_0 the softmax of the network after head probing
(eval mode, no augmentation) and e_y the one-hot label — never smoothed, whatever ε HP used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def energy_per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||e_y - softmax(logits)||_2 for every row."""
    q = torch.softmax(logits.float(), dim=1)
    e = F.one_hot(y, num_classes=logits.shape[1]).to(q.dtype)
    return (e - q).norm(dim=1)


@dataclass
class HeadEval:
    accuracy: float
    loss: float  # cross-entropy against unsmoothed labels
    energy: float


@torch.no_grad()
def evaluate_logits(chunks: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> HeadEval:
    """Accuracy, loss and energy over (logits, labels) chunks."""
    n, correct, loss, energy = 0, 0.0, 0.0, 0.0
    for logits, y in chunks:
        logits = logits.float()
        n += len(y)
        correct += float((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        energy += float(energy_per_sample(logits, y).sum())
    if n == 0:
        return HeadEval(float("nan"), float("nan"), float("nan"))
    return HeadEval(correct / n, loss / n, energy / n)


@torch.no_grad()
def batched(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """fn over x in chunks of batch_size, concatenated."""
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


@dataclass
class Adaptation:
    l2: float  # mean ||z_T - z_0||_2
    cos: float  # mean cos(z_T, z_0)
    dot: float  # mean z_T . z_0
    norm_T: float  # mean ||z_T||
    norm_0: float  # mean ||z_0||


def feature_adaptation(z0: torch.Tensor, zT: torch.Tensor) -> Adaptation:
    """How far FT moved the features, over a fixed probe set (rows are samples)."""
    z0, zT = z0.double(), zT.double()
    return Adaptation(
        l2=float((zT - z0).norm(dim=1).mean()),
        cos=float(F.cosine_similarity(zT, z0, dim=1, eps=1e-12).mean()),
        dot=float((zT * z0).sum(dim=1).mean()),
        norm_T=float(zT.norm(dim=1).mean()),
        norm_0=float(z0.norm(dim=1).mean()),
    )
