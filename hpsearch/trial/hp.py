"""Head probing (HP): train the head (and re-initialised stages) on a frozen copied part.

The copied part stays in eval mode with ``requires_grad=False`` (its BatchNorm statistics do not
move). The loss is cross-entropy with label smoothing ε. After every epoch — and once before the
first — the network is evaluated on the unaugmented train split: the energy curve over τ, nearly
free when HP runs on cached copied-part outputs.

HP runs τ = ``hp.epochs`` epochs, or with ``hp.until_converged`` until the stop rule ``converged``
holds (at most ``hp.max_epochs``): the HP objective — cross-entropy with ε on the whole train split,
eval mode — improved by less than ``hp.converge_tol`` (relative) over the last
``hp.converge_window`` epochs. The full-split evaluation, not the running mini-batch loss, makes the
rule deterministic and free of SGD noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from tqdm import tqdm

from hpsearch.models import TransferNet, eval_mode
from hpsearch.trial.metrics import HeadEval, evaluate_logits
from hpsearch.trial.optim import epoch_batches, make_optimizer

STOP_TAU, STOP_CONVERGED, STOP_MAX_EPOCHS = "tau", "converged", "max_epochs"


@dataclass
class HPResult:
    epochs_run: int
    train: HeadEval  # at the end of HP = the start of FT
    val: HeadEval
    energy_curve: list[float] = field(default_factory=list)  # index e: after e HP epochs
    train_acc_curve: list[float] = field(default_factory=list)
    train_loss_curve: list[float] = field(default_factory=list)
    objective_curve: list[float] = field(default_factory=list)  # HP's loss (with ε), train split
    converged: bool = False  # the stop rule held at the end of HP (whether or not it stopped HP)
    stop_reason: str = STOP_TAU  # tau | converged | max_epochs


def converged(objective_curve: list[float], window: int, tol: float) -> bool:
    """Whether the objective improved by less than ``tol`` (relative) over the last ``window``
    epochs; ``objective_curve[e]`` is the value after e epochs, so it needs ``window + 1``
    values."""
    if window < 1 or len(objective_curve) <= window:
        return False
    before, now = objective_curve[-1 - window], objective_curve[-1]
    return before - now < tol * abs(before)


def freeze_copied(net: TransferNet) -> None:
    net.copied.eval()
    for p in net.copied.parameters():
        p.requires_grad_(False)


@torch.inference_mode()
def split_logits(
    net: TransferNet, outputs, y: torch.Tensor, split: str, batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, labels) chunks of the network in eval mode on one split, from copied-part outputs.

    Every module's mode is restored afterwards (see ``eval_mode``).
    """
    chunks = []
    start = 0
    with eval_mode(net):
        for h in outputs.chunks(split, batch_size):
            logits = net.from_copied(h).float()
            chunks.append((logits, y[start : start + len(h)].to(logits.device)))
            start += len(h)
    return chunks


def evaluate_split(
    net: TransferNet, outputs, y: torch.Tensor, split: str, batch_size: int
) -> HeadEval:
    """The network in eval mode on one split, from copied-part outputs."""
    return evaluate_logits(split_logits(net, outputs, y, split, batch_size))


@torch.no_grad()
def objective_loss(
    chunks: list[tuple[torch.Tensor, torch.Tensor]], label_smoothing: float
) -> float:
    """Mean cross-entropy with label smoothing ε over (logits, labels) chunks: what HP minimises."""
    n = sum(len(y) for _, y in chunks)
    total = sum(
        float(F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="sum"))
        for logits, y in chunks
    )
    return total / n if n else float("nan")


def head_probe(
    net: TransferNet,
    outputs,
    y_train: torch.Tensor,
    y_val: torch.Tensor,
    hp: DictConfig,
    seed: int,
    eval_batch_size: int,
    autocast: bool = False,
    progress: bool = False,
) -> HPResult:
    """Run HP — τ = hp.epochs epochs, or until converged with hp.until_converged; return the
    metrics at the start of FT."""
    freeze_copied(net)
    trainable = list(net.upper.parameters()) + list(net.head.parameters())
    gen = torch.Generator().manual_seed(seed)
    device = y_train.device
    result = HPResult(epochs_run=0, train=HeadEval(0, 0, 0), val=HeadEval(0, 0, 0))
    eps = float(hp.label_smoothing)
    window, tol = int(hp.converge_window), float(hp.converge_tol)

    def record() -> HeadEval:
        chunks = split_logits(net, outputs, y_train, "train", eval_batch_size)
        ev = evaluate_logits(chunks)
        result.energy_curve.append(ev.energy)
        result.train_acc_curve.append(ev.accuracy)
        result.train_loss_curve.append(ev.loss)
        result.objective_curve.append(objective_loss(chunks, eps))
        result.converged = converged(result.objective_curve, window, tol)
        return ev

    train_eval = record()
    until_converged = bool(hp.until_converged)
    epochs = int(hp.max_epochs) if until_converged else int(hp.epochs)
    result.stop_reason = STOP_MAX_EPOCHS if until_converged else STOP_TAU
    if epochs > 0:
        optimizer = make_optimizer(trainable, hp)
        net.upper.train()
        net.head.train()
        for _ in tqdm(range(epochs), desc="HP", disable=None if progress else True, leave=False):
            for idx in epoch_batches(len(y_train), int(hp.batch_size), gen):
                h = outputs.train_batch(idx, gen)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    logits = net.from_copied(h)
                loss = F.cross_entropy(logits.float(), y_train[idx.to(device)], label_smoothing=eps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            result.epochs_run += 1
            train_eval = record()
            if until_converged and result.converged:
                result.stop_reason = STOP_CONVERGED
                break
    result.train = train_eval
    result.val = evaluate_split(net, outputs, y_val, "val", eval_batch_size)
    return result
