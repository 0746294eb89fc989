"""Pack what ``benchmarks/make_tables_gpu.sh`` needs on a GPU machine that has no copy of the data.

The device receives one checkout of at most 64 MiB, so the split-CIFAR ImageFolder (28 MB for the
five target classes) and the backbone (45 MB) do not both fit as they are. This writes, into
``--out``:

- ``cifar10.tar``: ``train/<class>/`` and ``test/<class>/`` of the target classes with every file
  name of the original listing, so that ``hpsearch.data.datasets`` draws the same train and
  validation images: the files any of the tables selects are the real JPEGs, every other train
  file is a hard link to one grey 32x32 JPEG (stored once in the tar; it is decoded into the pool
  but never selected). The test split is copied whole.
- ``weights.planes.pt``: the backbone's state_dict, exact but smaller (37.6 MB): its float32
  values split into four byte planes, the sign-and-exponent plane compressed with LZMA (the
  mantissa planes do not compress); ``make_tables_gpu.sh`` rebuilds the state_dict with
  ``--unpack-weights`` and checks its digest.
- ``selection.json``: per table and class, the file names it trains and validates on.

``--check`` then decodes every table's splits from the original root and from the packed one and
fails unless the train, validation and test tensors are identical.

    python benchmarks/tables_carry.py --root ../shared/data/cifar10 \
        --weights ../shared/weights/resnet18_cifar10_src5.pt --out .devcarry --check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from hpsearch.data.datasets import Split, _image_files, _split_train_val, load_splits

TARGET = ["dog", "frog", "horse", "ship", "truck"]
# table name -> (classes, train_per_class); validation 200 per class, split seed 0, whole test
TABLES = {
    "full": (TARGET, 1000),
    "lowdata3": (["dog", "horse", "truck"], 100),
    "lowdata25": (TARGET, 25),
    "lowdata300": (TARGET, 300),
}
VAL_PER_CLASS = 200
SPLIT_SEED = 0


def data_cfg(root: str, classes: list[str], train_per_class: int):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            "format": "imagefolder",
            "root": root,
            "download": False,
            "classes": list(classes),
            "train_per_class": train_per_class,
            "val_per_class": VAL_PER_CLASS,
            "test_per_class": None,
            "split_seed": SPLIT_SEED,
            "image_size": 32,
            "cache_size": None,
        }
    )


def selected_files(root: Path, classes: list[str], train_per_class: int) -> dict[str, list[str]]:
    """File names of each class that the table's train and validation splits hold.

    Runs hpsearch's own split on a pool whose "images" are the files' indices, so the selection
    is the one ``load_splits`` makes from the same listing.
    """
    names, labels = [], []
    for label, name in enumerate(classes):
        files = _image_files(root / "train" / name)
        names += [(name, f.name) for f in files]
        labels += [label] * len(files)
    pool = Split(torch.arange(len(names)), torch.tensor(labels, dtype=torch.long))
    cfg = SimpleNamespace(
        train_per_class=train_per_class, val_per_class=VAL_PER_CLASS, split_seed=SPLIT_SEED
    )
    train, val = _split_train_val(pool, classes, cfg)
    out: dict[str, list[str]] = {c: [] for c in classes}
    for i in torch.cat([train.x, val.x]).tolist():
        cls, fname = names[i]
        out[cls].append(fname)
    return {c: sorted(v) for c, v in out.items()}


def grey_jpeg(path: Path) -> None:
    from torchvision.io import encode_jpeg

    path.write_bytes(encode_jpeg(torch.full((3, 32, 32), 128, dtype=torch.uint8)).numpy().tobytes())


def pack_data(root: Path, out: Path, selection: dict[str, dict[str, list[str]]]) -> Path:
    keep: dict[str, set[str]] = {c: set() for c in TARGET}
    for table in selection.values():
        for cls, files in table.items():
            keep[cls].update(files)
    with tempfile.TemporaryDirectory() as tmp:
        layout = Path(tmp) / "cifar10"
        placeholder = Path(tmp) / "placeholder.jpg"
        grey_jpeg(placeholder)
        for cls in TARGET:
            (layout / "train" / cls).mkdir(parents=True)
            for f in _image_files(root / "train" / cls):
                dest = layout / "train" / cls / f.name
                if f.name in keep[cls]:
                    shutil.copyfile(f, dest)
                else:
                    os.link(placeholder, dest)
            shutil.copytree(root / "test" / cls, layout / "test" / cls)
        tar_path = out / "cifar10.tar.gz"
        # gzip: the tar's 512-byte headers and padding would double the size; hard links are
        # stored once
        with tarfile.open(tar_path, "w:gz", compresslevel=6) as tar:
            tar.add(layout, arcname="cifar10")
    return tar_path


def _float_bytes(state: dict[str, torch.Tensor]) -> bytes:
    return b"".join(
        state[k].contiguous().reshape(-1).numpy().tobytes()
        for k in state
        if state[k].is_floating_point()
    )


def pack_weights(src: Path, out: Path) -> Path:
    """The state_dict, exact: its float32 values as four byte planes (the top plane, sign and
    exponent, compressed with LZMA), the integer tensors as they are, and a digest to check."""
    state = torch.load(src, map_location="cpu", weights_only=True)
    floats = [k for k, v in state.items() if v.is_floating_point()]
    if any(state[k].dtype != torch.float32 for k in floats):
        sys.exit("weights: only float32 tensors are packed")
    raw = np.frombuffer(_float_bytes(state), dtype=np.uint8).reshape(-1, 4)
    planes = [np.ascontiguousarray(raw[:, i]).tobytes() for i in range(4)]
    planes[3] = lzma.compress(planes[3], preset=6)
    pack = {
        "keys": list(state),
        "shapes": [list(v.shape) for v in state.values()],
        "floats": floats,
        "ints": {k: v for k, v in state.items() if not v.is_floating_point()},
        "planes": [torch.frombuffer(bytearray(p), dtype=torch.uint8) for p in planes],
        "sha256": hashlib.sha256(_float_bytes(state)).hexdigest(),
    }
    path = out / "weights.planes.pt"
    torch.save(pack, path)
    return path


def unpack_weights(src: Path, dest: Path) -> None:
    """Rebuild the exact state_dict from ``pack_weights``'s file and save it to ``dest``."""
    pack = torch.load(src, map_location="cpu", weights_only=True)
    planes = [bytes(p.numpy().tobytes()) for p in pack["planes"]]
    planes[3] = lzma.decompress(planes[3])
    raw = np.stack([np.frombuffer(p, dtype=np.uint8) for p in planes], axis=1)
    flat = torch.from_numpy(raw.reshape(-1).copy().view(np.float32))
    state, at = {}, 0
    for key, shape in zip(pack["keys"], pack["shapes"], strict=True):
        if key in pack["ints"]:
            state[key] = pack["ints"][key]
            continue
        n = int(np.prod(shape)) if shape else 1
        state[key] = flat[at : at + n].reshape(shape).clone()
        at += n
    if at != flat.numel() or hashlib.sha256(_float_bytes(state)).hexdigest() != pack["sha256"]:
        sys.exit(f"weights: {src} does not rebuild the packed state_dict (digest differs)")
    torch.save(state, dest)
    print(f"weights: {dest} rebuilt, float32 digest {pack['sha256'][:16]} matches")


def check(root: Path, tar_path: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, filter="data")
        packed = Path(tmp) / "cifar10"
        for name, (classes, n_train) in TABLES.items():
            a = load_splits(data_cfg(str(root), classes, n_train), Path(tmp) / "cache_a")
            b = load_splits(data_cfg(str(packed), classes, n_train), Path(tmp) / "cache_b")
            for split in ("train", "val", "test"):
                sa, sb = getattr(a, split), getattr(b, split)
                if not (torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)):
                    sys.exit(f"check: table {name}, {split} split differs from the original")
            print(
                f"check: {name}: train {len(a.train)}, val {len(a.val)}, test {len(a.test)} equal"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", help="the CIFAR-10 ImageFolder root")
    ap.add_argument("--weights", help="resnet18_cifar10_src5.pt")
    ap.add_argument("--out", help="folder to write into")
    ap.add_argument("--check", action="store_true", help="compare the decoded splits")
    ap.add_argument(
        "--unpack-weights",
        nargs=2,
        metavar=("PACK", "DEST"),
        help="rebuild the state_dict from weights.planes.pt (on the device)",
    )
    args = ap.parse_args()
    if args.unpack_weights:
        unpack_weights(Path(args.unpack_weights[0]), Path(args.unpack_weights[1]))
        return
    if not (args.root and args.weights and args.out):
        ap.error("--root, --weights and --out are required unless --unpack-weights")
    root, out = Path(args.root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    selection = {name: selected_files(root, c, n) for name, (c, n) in TABLES.items()}
    (out / "selection.json").write_text(json.dumps(selection, indent=0))  # a record, not carried
    tar_path = pack_data(root, out, selection)
    print(f"data: {tar_path} {tar_path.stat().st_size} bytes")
    w = pack_weights(Path(args.weights), out)
    print(f"weights: {w} {w.stat().st_size} bytes")
    if args.check:
        check(root, tar_path)


if __name__ == "__main__":
    main()
