"""Finetuning (FT): every parameter trains, with augmentation, under a per-step lr schedule.

``Finetuner`` owns the whole FT state — model, optimiser, scheduler, RNG, epoch — so that it can
be saved after any epoch and resumed from it. After each epoch it reports validation accuracy
to a callback (the trial's ``report`` + ``should_prune``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from tqdm import tqdm

from hpsearch.data import Split
from hpsearch.data.pipeline import InputPipeline
from hpsearch.models import TransferNet, eval_mode
from hpsearch.trial.metrics import batched
from hpsearch.trial.optim import epoch_batches, make_optimizer, steps_per_epoch


@torch.inference_mode()
def accuracy(
    net: TransferNet, split: Split, pipeline: InputPipeline, batch_size: int, autocast: bool = False
) -> float:
    """Top-1 accuracy in eval mode without augmentation (NaN for an empty split)."""
    if len(split) == 0:
        return float("nan")
    with (
        eval_mode(net),
        torch.autocast(pipeline.device.type, dtype=torch.bfloat16, enabled=autocast),
    ):
        logits = batched(lambda x: net(pipeline(x)).float(), split.x, batch_size)
    return float((logits.argmax(1).cpu() == split.y.cpu()).float().mean())


def features(
    net: TransferNet, split: Split, pipeline: InputPipeline, batch_size: int
) -> torch.Tensor:
    """z = pooled copied-part output, eval mode, no augmentation, float32 on the CPU.

    Computed under ``inference_mode``, returned as an ordinary tensor (a clone), so a caller may
    still use it where autograd records."""
    with torch.inference_mode(), eval_mode(net):
        z = batched(lambda x: net.features(pipeline(x)).float().cpu(), split.x, batch_size)
    return z.clone()


@dataclass
class FTResult:
    epochs_run: int = 0  # epochs this process ran (fewer than ft.epochs after a resume)
    val_acc_curve: list[float] = field(default_factory=list)
    seconds: float = 0.0


class Finetuner:
    """FT of a TransferNet on the train split, evaluated on val after every epoch."""

    def __init__(
        self,
        net: TransferNet,
        train: Split,
        val: Split,
        pipeline: InputPipeline,
        ft: DictConfig,
        seed: int,
        eval_batch_size: int,
        autocast: bool = False,
    ) -> None:
        self.net, self.train, self.val, self.pipeline = net, train, val, pipeline
        self.ft, self.eval_batch_size, self.autocast = ft, eval_batch_size, autocast
        for p in net.parameters():
            p.requires_grad_(True)
        self.optimizer = make_optimizer(net.parameters(), ft)
        self.total_epochs = int(ft.epochs)
        total_steps = max(1, self.total_epochs * steps_per_epoch(len(train), int(ft.batch_size)))
        if ft.schedule == "cosine":
            schedule = lambda step: (
                0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
            )
        else:
            schedule = lambda step: 1.0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch = 0  # epochs completed
        self.val_acc_curve: list[float] = []

    def state_dict(self) -> dict:
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.gen.get_state(),
            "epoch": self.epoch,
            "val_acc_curve": list(self.val_acc_curve),
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.gen.set_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.val_acc_curve = list(state["val_acc_curve"])

    def train_epoch(self) -> None:
        self.net.train()
        label_smoothing = float(self.ft.label_smoothing)
        y = self.train.y
        for idx in epoch_batches(len(self.train), int(self.ft.batch_size), self.gen):
            inputs = self.pipeline(self.train.x[idx], augment=True, gen=self.gen)
            with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.net(inputs)
            loss = F.cross_entropy(
                logits.float(), y[idx.to(y.device)], label_smoothing=label_smoothing
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()

    def run(
        self, on_epoch: Callable[[int, float], None] | None = None, progress: bool = False
    ) -> FTResult:
        """Train the remaining epochs; ``on_epoch(epoch, val_acc)`` may raise to stop (prune)."""
        result = FTResult()
        start = time.perf_counter()
        try:
            for _ in tqdm(
                range(self.epoch, self.total_epochs),
                desc="FT",
                disable=None if progress else True,
                leave=False,
            ):
                self.train_epoch()
                self.epoch += 1
                result.epochs_run += 1
                acc = accuracy(
                    self.net, self.val, self.pipeline, self.eval_batch_size, self.autocast
                )
                self.val_acc_curve.append(acc)
                if on_epoch is not None:
                    on_epoch(self.epoch, acc)
        finally:
            result.val_acc_curve = list(self.val_acc_curve)
            result.seconds = time.perf_counter() - start
        return result
