"""Head probing (HP): train the head (and re-initialised stages) on a frozen copied part.

The copied part stays in eval mode with ``requires_grad=False`` (its BatchNorm statistics do not
move). The loss is cross-entropy with label smoothing ε. After every epoch — and once before the
first — the network is evaluated on the unaugmented train split: the energy curve over τ, nearly
free when HP runs on cached copied-part outputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from tqdm import tqdm

from hpsearch.metrics import HeadEval, evaluate_logits
from hpsearch.models import TransferNet, eval_mode
from hpsearch.training import epoch_batches, make_optimizer


@dataclass
class HPResult:
    epochs_run: int
    train: HeadEval  # at the end of HP = the start of FT
    val: HeadEval
    energy_curve: list[float] = field(default_factory=list)  # index e: after e HP epochs
    train_acc_curve: list[float] = field(default_factory=list)
    train_loss_curve: list[float] = field(default_factory=list)


def freeze_copied(net: TransferNet) -> None:
    net.copied.eval()
    for p in net.copied.parameters():
        p.requires_grad_(False)


@torch.no_grad()
def evaluate_split(net: TransferNet, outputs, y: torch.Tensor, split: str,
                   batch_size: int) -> HeadEval:
    """The network in eval mode on one split, from copied-part outputs."""
    chunks = []
    start = 0
    with eval_mode(net):
        for h in outputs.chunks(split, batch_size):
            logits = net.from_copied(h)
            chunks.append((logits, y[start:start + len(h)].to(logits.device)))
            start += len(h)
    return evaluate_logits(chunks)


def head_probe(net: TransferNet, outputs, y_train: torch.Tensor, y_val: torch.Tensor,
               hp: DictConfig, seed: int, eval_batch_size: int, autocast: bool = False,
               progress: bool = False) -> HPResult:
    """Run τ = hp.epochs epochs of HP; return the metrics at the start of FT."""
    freeze_copied(net)
    trainable = list(net.upper.parameters()) + list(net.head.parameters())
    gen = torch.Generator().manual_seed(seed)
    device = y_train.device
    result = HPResult(epochs_run=0, train=HeadEval(0, 0, 0), val=HeadEval(0, 0, 0))

    def record() -> HeadEval:
        ev = evaluate_split(net, outputs, y_train, "train", eval_batch_size)
        result.energy_curve.append(ev.energy)
        result.train_acc_curve.append(ev.accuracy)
        result.train_loss_curve.append(ev.loss)
        return ev

    train_eval = record()
    epochs = int(hp.epochs)
    if epochs > 0:
        optimizer = make_optimizer(trainable, hp)
        net.upper.train()
        net.head.train()
        for _ in tqdm(range(epochs), desc="HP", disable=None if progress else True, leave=False):
            for idx in epoch_batches(len(y_train), int(hp.batch_size), gen):
                h = outputs.train_batch(idx, gen)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    logits = net.from_copied(h)
                loss = F.cross_entropy(logits.float(), y_train[idx.to(device)],
                                       label_smoothing=float(hp.label_smoothing))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            result.epochs_run += 1
            train_eval = record()
    result.train = train_eval
    result.val = evaluate_split(net, outputs, y_val, "val", eval_batch_size)
    return result
