"""From cached uint8 tensors to model inputs, as batched tensor ops on the training device.

No DataLoader and no per-image Python loop: a batch is an index into the split's tensor, random
crop (with zero padding) and horizontal flip are one gather and one ``where`` over the batch, then
a resize to ``data.image_size`` (when the cache keeps a smaller resolution) and normalisation.
Vector data (the toy) passes through unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from hpsearch.backbones import InputSpec


def random_crop_flip(
    images: torch.Tensor, padding: int, flip: bool, gen: torch.Generator
) -> torch.Tensor:
    """Per-sample random crop from the zero-padded batch, and a random horizontal flip."""
    n, _, h, w = images.shape
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(images.device)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        batch = torch.arange(n, device=images.device)[:, None, None, None]
        chans = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        images = padded[batch, chans, rows, cols]
    if flip:
        mirror = (torch.rand(n, generator=gen) < 0.5).to(images.device)
        images = torch.where(mirror[:, None, None, None], images.flip(3), images)
    return images


class InputPipeline:
    """Turns cached split tensors into normalised model inputs on ``device``."""

    def __init__(
        self,
        data_cfg: DictConfig,
        kind: str,
        device: torch.device,
        channels_last: bool = False,
        spec: InputSpec | None = None,
    ) -> None:
        """``spec``: a backbone family's input spec (size, mean, std, interpolation) in place of
        data.image_size/mean/std and bilinear resizing."""
        self.kind = kind
        self.device = device
        self.image_size = int(spec.size if spec else data_cfg.image_size)
        self.interpolation = spec.interpolation if spec else "bilinear"
        self.padding = int(data_cfg.crop_padding)
        self.flip = bool(data_cfg.flip)
        self.channels_last = channels_last
        mean = list(spec.mean if spec else data_cfg.mean)
        std = list(spec.std if spec else data_cfg.std)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0

    def __call__(
        self, x: torch.Tensor, augment: bool = False, gen: torch.Generator | None = None
    ) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.kind == "vector":  # float64 stays float64 (the first-order checks use it)
            return x if x.is_floating_point() else x.float()
        if augment:
            assert gen is not None, "augmentation needs a generator"
            x = random_crop_flip(x, self.padding, self.flip, gen)
        x = x.float()
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode=self.interpolation,
                align_corners=None if self.interpolation == "nearest" else False,
                antialias=False,
            )
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
