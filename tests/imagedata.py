"""Tiny generated ImageFolder datasets for tests (never the shared benchmark data)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.io import write_png


def make_imagefolder(
    root: Path,
    classes: list[str],
    train_per_class: int,
    test_per_class: int,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """root/{train,test}/<class>/NNNN.png with a class-dependent colour so classes are learnable."""
    gen = torch.Generator().manual_seed(seed)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            base = torch.tensor([(c * 97) % 256, (c * 53 + 80) % 256, (c * 31 + 160) % 256])
            for i in range(n):
                noise = torch.randint(-40, 41, (3, size, size), generator=gen)
                img = (base[:, None, None] + noise).clamp(0, 255).to(torch.uint8)
                write_png(img, str(folder / f"{i:04d}.png"))
    return root
