"""Make the split-CIFAR benchmark's data and source backbone (``../shared/BENCHMARK.md``).

Two steps, each skipped when its output exists:

1. **data**: CIFAR-10 (downloaded with torchvision, 170 MB, checked against its MD5; or read from
   ``--from-dir``) written as an ImageFolder, the layout ``data=imagefolder`` reads:
   ``<root>/{train,test}/<class>/NNNN.jpg``, 5,000 train and 1,000 test JPEGs per class (quality
   75), numbered per class in the dataset's order.
2. **pretrain**: ``torchvision.models.resnet18(num_classes=5)`` trained from scratch on the train
   split of {airplane, automobile, bird, cat, deer} at 32x32 (CIFAR-10 normalisation, random crop
   with 4-pixel padding and horizontal flip; SGD with Nesterov momentum, cosine learning rate),
   its test accuracy measured on those classes' test split. Writes the state_dict (``--weights``)
   and a JSON record next to it (``.json``): architecture, classes, epochs, source test accuracy,
   seed, the recipe and the time it took.

    # with internet: everything split_cifar and split_cifar_lowdata need. 30 epochs of 25,000
    # images: at the ~200 training images/s BENCHMARK.md measured for ResNet-18 at 32x32 on 2 CPU
    # cores about an hour (this script's own speed was not measured on a free machine); a GPU,
    # used when present (--device auto), is much faster
    python benchmarks/make_split_cifar.py --root storage/data/cifar10 \\
        --weights storage/weights/resnet18_cifar10_src5.pt
    python -m hpsearch +experiment=split_cifar data.root=storage/data/cifar10 \\
        backbone.weights=storage/weights/resnet18_cifar10_src5.pt
    # without: CIFAR-10's python version (cifar-10-python.tar.gz, or the folder
    # cifar-10-batches-py it unpacks to) copied into DIR
    python benchmarks/make_split_cifar.py --from-dir DIR --root ... --weights ...
    # the whole path in seconds (1 epoch on 20 images per class; the weights are not useful)
    python benchmarks/make_split_cifar.py --smoke --from-dir DIR --root /tmp/c10 --weights /tmp/w.pt

A bad input or a failed download is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shutil
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hpsearch.app import set_openmp_defaults  # noqa: E402

set_openmp_defaults()  # hpsearch's OpenMP settings for CPU training, before torch loads OpenMP

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hpsearch.data.datasets import CIFAR10_CLASSES, atomic_save  # noqa: E402
from hpsearch.errors import HpsearchError  # noqa: E402

SOURCE_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
MEAN = (0.4914, 0.4822, 0.4465)  # ../shared/BENCHMARK.md: the source task's statistics
STD = (0.2470, 0.2435, 0.2616)
JPEG_QUALITY = 75  # the quality of ../shared/data/cifar10's JPEGs (their quantisation tables)
BATCHES = "cifar-10-batches-py"  # the folder CIFAR-10's python version unpacks to
TARBALL = "cifar-10-python.tar.gz"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
PAD = 4  # random crop padding (pixels)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--root", type=Path, default=Path("storage/data/cifar10"), help="ImageFolder")
    ap.add_argument(
        "--weights",
        type=Path,
        default=Path("storage/weights/resnet18_cifar10_src5.pt"),
        help="the source backbone's state_dict; its record goes to the same name with .json",
    )
    ap.add_argument(
        "--download-dir",
        type=Path,
        default=Path("storage/downloads"),
        help="where torchvision downloads CIFAR-10 to (kept: a rerun does not download again)",
    )
    ap.add_argument(
        "--from-dir",
        type=Path,
        help=f"read CIFAR-10 from DIR ({TARBALL} or {BATCHES}/) instead of downloading",
    )
    ap.add_argument("--steps", default="data,pretrain", help="data, pretrain or both (default)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto (a GPU when present), cpu, cuda")
    ap.add_argument(
        "--train-per-class",
        type=int,
        help="pretrain on the first N train images per source class (default: all 5,000)",
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="1 epoch on 20 images per class, batch 16: checks the whole path in seconds",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.epochs, args.train_per_class, args.batch_size = 1, 20, 16
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if not steps or any(s not in ("data", "pretrain") for s in steps):
        raise HpsearchError(f"--steps={args.steps!r}: allowed: data, pretrain or data,pretrain")
    args.steps = steps
    for flag, value, low in (
        ("--epochs", args.epochs, 1),
        ("--batch-size", args.batch_size, 1),
        ("--train-per-class", args.train_per_class, 1),
    ):
        if value is not None and value < low:
            raise HpsearchError(f"{flag}={value} is invalid: must be >= {low}")
    if not args.lr > 0:
        raise HpsearchError(f"--lr={args.lr} is invalid: must be > 0")
    return args


def _bar(total: int, desc: str):
    """A tqdm bar on stderr, quiet when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=None, leave=False, file=sys.stderr)


# ---------------------------------------------------------------------------- data


def download(download_dir: Path) -> Path:
    """CIFAR-10's python version downloaded (and MD5-checked) by torchvision; its batch folder."""
    import socket

    import torchvision

    socket.setdefaulttimeout(60)  # a network that does not answer fails instead of hanging
    try:
        for train in (True, False):
            torchvision.datasets.CIFAR10(str(download_dir), train=train, download=True)
    except OSError as err:  # no network, DNS, refused, timeout (URLError is an OSError)
        reason = getattr(err, "reason", None) or err.strerror or err
        raise HpsearchError(
            f"could not download CIFAR-10 into {str(download_dir)!r} ({reason}); without "
            f"network copy {TARBALL} into a folder and pass --from-dir FOLDER"
        ) from None
    except RuntimeError as err:  # torchvision: "File not found or corrupted."
        raise HpsearchError(
            f"CIFAR-10 in {str(download_dir)!r} is corrupted ({err}); delete it and run again"
        ) from None
    return download_dir / BATCHES


def batches_dir(from_dir: Path, unpack_to: Path) -> Path:
    """The ``cifar-10-batches-py`` folder in ``from_dir``, unpacking its tarball if needed."""
    if (from_dir / BATCHES).is_dir():
        return from_dir / BATCHES
    if from_dir.name == BATCHES and from_dir.is_dir():
        return from_dir
    tarball = from_dir / TARBALL
    if not tarball.is_file():
        raise HpsearchError(
            f"--from-dir={str(from_dir)!r}: neither {BATCHES}/ nor {TARBALL} is there"
        )
    unpack_to.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tarball) as tar:
            tar.extractall(unpack_to, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise HpsearchError(f"--from-dir: cannot unpack {str(tarball)!r} ({err})") from None
    return unpack_to / BATCHES


def read_batches(folder: Path) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """CIFAR-10's python batches: class names, and per split (N, 32, 32, 3) uint8 images with
    their labels, in the files' order."""

    def load(name: str) -> dict:
        path = folder / name
        try:
            with open(path, "rb") as fh:
                return pickle.load(fh, encoding="bytes")
        except (OSError, pickle.UnpicklingError, EOFError) as err:
            raise HpsearchError(f"CIFAR-10 batch {str(path)!r} unreadable ({err})") from None

    names = [n.decode() for n in load("batches.meta")[b"label_names"]]
    if tuple(names) != CIFAR10_CLASSES:
        raise HpsearchError(f"{str(folder)!r}: class names {names} are not CIFAR-10's")
    splits = {}
    for split, files in (("train", TRAIN_FILES), ("test", (TEST_FILE,))):
        parts = [load(f) for f in files]
        data = np.concatenate([p[b"data"] for p in parts]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([np.asarray(p[b"labels"], dtype=np.int64) for p in parts])
        splits[split] = (data.transpose(0, 2, 3, 1).copy(), labels)
    return names, splits


def write_imagefolder(
    root: Path, classes: Sequence[str], splits: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, int]:
    """``<root>/{train,test}/<class>/NNNN.jpg`` (numbered per class in the dataset's order),
    written under a temporary name and renamed when complete; images per split."""
    from PIL import Image

    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    with _bar(sum(len(y) for _, y in splits.values()), "writing JPEGs") as bar:
        for split, (images, labels) in splits.items():
            seen = [0] * len(classes)
            for name in classes:
                (tmp / split / name).mkdir(parents=True)
            for image, label in zip(images, labels.tolist()):
                path = tmp / split / classes[label] / f"{seen[label]:04d}.jpg"
                Image.fromarray(image).save(path, quality=JPEG_QUALITY)
                seen[label] += 1
                bar.update(1)
            counts[split] = len(labels)
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root)
    return counts


def make_data(args: argparse.Namespace) -> None:
    if (args.root / "train").is_dir() and (args.root / "test").is_dir():
        print(f"data: {args.root} exists; kept", file=sys.stderr)
        return
    if args.from_dir is not None:
        folder = batches_dir(args.from_dir, args.download_dir)
    else:
        folder = download(args.download_dir)
    classes, splits = read_batches(folder)
    counts = write_imagefolder(args.root, classes, splits)
    print(
        f"data: {counts['train']} train / {counts['test']} test images into {args.root}",
        file=sys.stderr,
    )


# ---------------------------------------------------------------------------- pretraining


def load_source(root: Path, split: str, per_class: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The source classes of one split as uint8 (N, 3, 32, 32) images and labels 0..4."""
    from torchvision.io import ImageReadMode, decode_image

    files = []
    for label, name in enumerate(SOURCE_CLASSES):
        folder = root / split / name
        if not folder.is_dir():
            raise HpsearchError(f"--root={str(root)!r}: class folder {str(folder)!r} is missing")
        found = sorted(folder.glob("*.jpg"))[:per_class]
        if not found:
            raise HpsearchError(f"--root: class folder {str(folder)!r} has no .jpg images")
        files += [(f, label) for f in found]
    images = []
    with _bar(len(files), f"decoding {split}") as bar:
        for f, _ in files:
            image = decode_image(str(f), mode=ImageReadMode.RGB)
            if image.shape[-2:] != (32, 32):
                raise HpsearchError(f"{str(f)!r} is {tuple(image.shape[-2:])}, not 32x32")
            images.append(image)
            bar.update(1)
    return torch.stack(images), torch.tensor([label for _, label in files])


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with ``PAD`` pixels of zero padding and a horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD))
    dy, dx = torch.randint(0, 2 * PAD + 1, (2, n), generator=gen).tolist()
    flip = (torch.rand(n, generator=gen) < 0.5).tolist()
    crops = [padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)]
    return torch.stack([c.flip(-1) if f else c for c, f in zip(crops, flip)])


def pretrain(args: argparse.Namespace) -> dict:
    """Train the source backbone; its JSON record."""
    import torchvision

    from hpsearch.trial.workspace import resolve_device

    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    train_x, train_y = load_source(args.root, "train", args.train_per_class)
    test_x, test_y = load_source(args.root, "test", None)
    mean = torch.tensor(MEAN, device=device)[None, :, None, None]
    std = torch.tensor(STD, device=device)[None, :, None, None]

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return ((x.to(device).float() / 255 - mean) / std).contiguous(
            memory_format=torch.channels_last
        )

    model = torchvision.models.resnet18(num_classes=len(SOURCE_CLASSES)).to(device)
    model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(len(train_y) / args.batch_size)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=args.lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=args.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs * steps_per_epoch)
    start = time.perf_counter()
    with _bar(args.epochs * steps_per_epoch, "pretraining") as bar:
        for epoch in range(args.epochs):
            model.train()
            order = torch.randperm(len(train_y), generator=gen)
            total = 0.0
            for i in range(0, len(order), args.batch_size):
                idx = order[i : i + args.batch_size]
                x = prepare(augment(train_x[idx], gen))
                loss = torch.nn.functional.cross_entropy(model(x), train_y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                total += loss.item() * len(idx)
                bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / len(train_y):.3f}")
    train_s = time.perf_counter() - start
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test_y), 500):
            logits = model(prepare(test_x[i : i + 500]))
            correct += int((logits.argmax(1).cpu() == test_y[i : i + 500]).sum())
    accuracy = correct / len(test_y)
    atomic_save({k: v.cpu() for k, v in model.state_dict().items()}, args.weights)
    record = {
        "arch": "torchvision.models.resnet18",
        "num_classes": len(SOURCE_CLASSES),
        "classes": list(SOURCE_CLASSES),
        "input": "32x32 RGB, CIFAR-10 mean/std normalisation",
        "epochs": args.epochs,
        "test_acc_source": round(accuracy, 4),
        "seed": args.seed,
        "mean": list(MEAN),
        "std": list(STD),
        "train_images": len(train_y),
        "test_images": len(test_y),
        "recipe": (
            f"SGD lr {args.lr} (cosine to 0 over every step), momentum 0.9 Nesterov, weight decay "
            f"{args.weight_decay}, batch {args.batch_size}; random crop (4-pixel padding) and "
            "horizontal flip; from scratch"
        ),
        "device": str(device),
        "torch": torch.__version__,
        "train_s": round(train_s, 1),
        "data_root": str(args.root),
    }
    json_path = args.weights.with_suffix(".json")
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"pretrain: {args.epochs} epochs on {len(train_y)} images in {train_s:.0f} s, source test "
        f"accuracy {accuracy:.4f}; {args.weights}, {json_path}",
        file=sys.stderr,
    )
    return record


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if "data" in args.steps:
            make_data(args)
        if "pretrain" in args.steps:
            if args.weights.exists():
                print(f"pretrain: {args.weights} exists; kept", file=sys.stderr)
            else:
                pretrain(args)
    except HpsearchError as err:
        print(f"make_split_cifar: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
