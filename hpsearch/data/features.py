"""The copied part's outputs, which head probing trains on.

The copied part is frozen and in eval mode during HP, so its outputs on the unaugmented data
never change: ``FeatureCache`` computes them once per (copied weights, layers copied, data, image
size) and keeps them on disk under the storage cache, shared by every trial and every worker on
the machine (written to a temporary name, then renamed, so concurrent workers never read a torn
file). ``CachedOutputs`` serves HP from those tensors; ``FrozenOutputs`` runs the frozen part on
every batch instead, with augmentation when ``hp.augment=true`` or when the cache would be too big.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from hpsearch.data.datasets import Splits, atomic_save
from hpsearch.data.pipeline import InputPipeline
from hpsearch.models import eval_mode

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class CachedOutputs:
    """Copied-part outputs precomputed for every split, resident on the training device."""

    def __init__(self, outputs: dict[str, torch.Tensor], device: torch.device) -> None:
        self.outputs = {name: t.to(device) for name, t in outputs.items()}

    def train_batch(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.outputs["train"][idx.to(self.outputs["train"].device)]

    def chunks(self, split: str, batch_size: int) -> Iterator[torch.Tensor]:
        out = self.outputs[split]
        for i in range(0, len(out), batch_size):
            yield out[i : i + batch_size]


class FrozenOutputs:
    """Copied-part outputs computed per batch by the frozen part (optionally augmented)."""

    def __init__(
        self,
        copied: nn.Module,
        splits: Splits,
        pipeline: InputPipeline,
        augment: bool,
        autocast: bool,
    ) -> None:
        self.copied, self.splits, self.pipeline = copied, splits, pipeline
        self.augment, self.autocast = augment, autocast

    def _run(self, x: torch.Tensor, augment: bool, gen: torch.Generator | None) -> torch.Tensor:
        inputs = self.pipeline(x, augment=augment, gen=gen)
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.copied(inputs).float()

    @torch.no_grad()
    def train_batch(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # no_grad, not inference_mode: the re-initialised stages train on this batch, and
        # autograd cannot save an inference tensor for their backward pass.
        return self._run(self.splits.train.x[idx], self.augment, gen)

    def chunks(self, split: str, batch_size: int) -> Iterator[torch.Tensor]:
        """Outputs for evaluation and for the cache, computed under ``inference_mode``: read
        them, or copy them (``torch.cat`` does) before autograd records on them."""
        x = getattr(self.splits, split).x
        for i in range(0, len(x), batch_size):
            with torch.inference_mode():
                out = self._run(x[i : i + batch_size], False, None)
            yield out


class FeatureCache:
    """On-disk cache of copied-part outputs, keyed by everything that determines them."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.dir = Path(cache_dir) / "features"

    def key(
        self, copied_fingerprint: str, n_copied: int, splits: Splits, image_size: int, arch: str
    ) -> str:
        text = f"{arch}|{n_copied}|{copied_fingerprint}|{splits.fingerprint}|{image_size}"
        return hashlib.sha1(text.encode()).hexdigest()[:20]

    @staticmethod
    def estimated_bytes(copied: nn.Module, splits: Splits, pipeline: InputPipeline) -> int:
        with torch.no_grad(), eval_mode(copied):
            shape = copied(pipeline(splits.train.x[:1])).shape[1:]
        total = len(splits.train) + len(splits.val) + len(splits.test)
        return total * math.prod(shape) * 4

    def load_or_compute(
        self,
        key: str,
        copied: nn.Module,
        splits: Splits,
        pipeline: InputPipeline,
        batch_size: int,
        autocast: bool,
        progress: bool,
    ) -> tuple[dict[str, torch.Tensor], bool]:
        """The outputs for train/val/test and whether they came from disk."""
        path = self.dir / f"{key}.pt"
        if path.exists():
            try:
                return torch.load(path, map_location="cpu", weights_only=True), True
            except Exception as err:
                log.warning("feature cache %s unreadable (%s); recomputing", path, err)
        frozen = FrozenOutputs(copied, splits, pipeline, augment=False, autocast=autocast)
        outputs: dict[str, torch.Tensor] = {}
        from tqdm import tqdm

        total = sum(math.ceil(len(getattr(splits, s)) / batch_size) for s in SPLITS)
        with (
            tqdm(
                total=total, desc="features", disable=None if progress else True, leave=False
            ) as bar,
            eval_mode(copied),
        ):
            for split in SPLITS:
                parts = []
                for chunk in frozen.chunks(split, batch_size):
                    parts.append(chunk.cpu())
                    bar.update(1)
                outputs[split] = torch.cat(parts) if parts else torch.zeros(0)
        atomic_save(outputs, path)
        return outputs, False
