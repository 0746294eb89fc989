"""Datasets as tensors: decoded once, cached as uint8 under the storage cache, split by class.

Every source ends as ``Splits``: train / val / test tensors with labels 0..C-1 in the order of
``classes``. Validation is drawn from the train split, disjoint from train, with a fixed seed; the
test split is kept apart (recorded, never used to select). Images are stored as uint8 at
``data.cache_size`` and become model inputs in ``hpsearch.data.pipeline``; the toy's vectors are
float32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from hpsearch.errors import HpsearchError

log = logging.getLogger(__name__)

RESIZE_CHUNK = 1000  # images resized per step (a progress step; bounds the float copy)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass
class Split:
    x: torch.Tensor  # uint8 (N, 3, H, W) images or float32 (N, D) vectors
    y: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    classes: list[str]
    kind: str  # "image" | "vector"
    fingerprint: str  # identifies the data for the feature cache

    @property
    def n_classes(self) -> int:
        return len(self.classes)


# --- the toy task -----------------------------------------------------------------------------


@dataclass
class SyntheticTasks:
    source: Split
    target: Splits


def make_synthetic_tasks(data_cfg: DictConfig) -> SyntheticTasks:
    """Source and target tasks with Gaussian classes that share ``shared_dim`` directions.

    Class means live in a random orthonormal basis of R^input_dim. Source classes use only the
    shared directions; target classes use the shared ones plus ``target_only_dim`` directions the
    source never needed, so a backbone pretrained on the source captures part of what the target
    needs and finetuning must move the features to find the rest.
    """
    s = data_cfg.synthetic
    gen = torch.Generator().manual_seed(int(s.seed))
    d, k_shared, k_new, n_cls = s.input_dim, s.shared_dim, s.target_only_dim, s.n_classes
    if k_shared + k_new > d:
        raise HpsearchError(
            f"data.synthetic: shared_dim + target_only_dim = {k_shared + k_new} "
            f"exceeds input_dim = {d}"
        )
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    shared, new = basis[:, :k_shared], basis[:, k_shared : k_shared + k_new]
    sep = float(s.class_separation)
    source_means = sep * torch.randn(n_cls, k_shared, generator=gen) @ shared.T
    target_means = (
        sep * 0.5 * torch.randn(n_cls, k_shared, generator=gen) @ shared.T
        + sep * torch.randn(n_cls, k_new, generator=gen) @ new.T
    )

    def sample(means: torch.Tensor, per_class: int) -> Split:
        y = torch.arange(n_cls).repeat_interleave(per_class)
        x = means[y] + float(s.noise) * torch.randn(len(y), d, generator=gen)
        return Split(x.float(), y)

    source = sample(source_means, int(s.source_per_class))
    test_per_class = data_cfg.test_per_class or data_cfg.val_per_class
    target = Splits(
        train=sample(target_means, int(data_cfg.train_per_class)),
        val=sample(target_means, int(data_cfg.val_per_class)),
        test=sample(target_means, int(test_per_class)),
        classes=[f"class{i}" for i in range(n_cls)],
        kind="vector",
        fingerprint=_digest(json.dumps(_plain(data_cfg), sort_keys=True)),
    )
    return SyntheticTasks(source=source, target=target)


# --- image datasets ---------------------------------------------------------------------------


def load_splits(
    data_cfg: DictConfig, cache_dir: str | os.PathLike, progress: bool = True
) -> Splits:
    """Load the configured dataset as ``Splits`` (decoding images once into the cache; with
    ``progress``, a bar on stderr while it decodes, when stderr is a terminal)."""
    if data_cfg.format == "synthetic":
        return make_synthetic_tasks(data_cfg).target
    if data_cfg.format == "tensors":
        return load_tensor_file(data_cfg)
    key = _digest(
        json.dumps(
            {
                **_plain(data_cfg),
                "root": _abs(data_cfg.root),
                "listing": _listing_fingerprint(data_cfg),
            },
            sort_keys=True,
        )
    )
    path = Path(cache_dir) / "data" / f"{data_cfg.format}-{key[:16]}.pt"
    if path.exists():
        try:
            blob = torch.load(path, weights_only=True)
            return _from_blob(blob, fingerprint=key)
        except Exception as err:  # a torn or foreign file: rebuild it
            log.warning("data cache %s unreadable (%s); decoding again", path, err)
    log.info("decoding %s at %d px into %s (once)", data_cfg.format, _cache_size(data_cfg), path)
    train_pool, test_pool, classes = _read_source(data_cfg, progress)
    train, val = _split_train_val(train_pool, classes, data_cfg)
    test = _take_per_class(test_pool, classes, data_cfg.test_per_class, data_cfg.split_seed)
    blob = {
        "train_x": train.x,
        "train_y": train.y,
        "val_x": val.x,
        "val_y": val.y,
        "test_x": test.x,
        "test_y": test.y,
        "classes": classes,
    }
    atomic_save(blob, path)
    log.info("decoded %d/%d/%d images into %s", len(train), len(val), len(test), path)
    return _from_blob(blob, fingerprint=key)


TENSOR_FILE_KEYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y", "classes")


def load_tensor_file(data_cfg: DictConfig) -> Splits:
    """A dataset already decoded and split: the format of the decode cache (``storage/cache/data``).

    The file fixes the splits, so its classes and per-class counts must agree with the config.
    """
    path = Path(str(data_cfg.root)).expanduser()
    if not path.is_file():
        raise HpsearchError(
            f"data.root={str(path)!r}: file not found; data.format=tensors needs "
            f"a .pt file with {', '.join(TENSOR_FILE_KEYS)}"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise HpsearchError(
            f"data.root={str(path)!r}: not a loadable tensor file ({type(err).__name__})"
        ) from None
    if not isinstance(blob, dict) or any(k not in blob for k in TENSOR_FILE_KEYS):
        raise HpsearchError(
            f"data.root={str(path)!r}: expected a mapping with keys " + ", ".join(TENSOR_FILE_KEYS)
        )
    splits = _from_blob(
        blob,
        fingerprint=_digest(
            f"tensors|{path.resolve()}|{path.stat().st_size}|{path.stat().st_mtime_ns}"
        ),
    )
    if data_cfg.classes and list(data_cfg.classes) != splits.classes:
        raise HpsearchError(
            f"data.classes={list(data_cfg.classes)} but {str(path)!r} holds {splits.classes}"
        )
    for name, want in (
        ("train", data_cfg.train_per_class),
        ("val", data_cfg.val_per_class),
        ("test", data_cfg.test_per_class),
    ):
        counts = torch.bincount(getattr(splits, name).y, minlength=splits.n_classes).tolist()
        if want is not None and any(c != int(want) for c in counts):
            raise HpsearchError(
                f"data.{name}_per_class={want} but {str(path)!r} holds "
                f"{counts} {name} images per class"
            )
    return splits


def atomic_save(obj: object, path: Path) -> bool:
    """Write a cache file: torch.save to a temporary name, then rename, so readers never see a
    torn file. A cache only saves time: when it cannot be written (a full disk, a read-only or
    vanished directory) the temporary file is removed, a warning says why, and the caller goes
    on with what it computed (False)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, tmp)
        os.replace(tmp, path)
        return True
    except (OSError, RuntimeError) as err:  # torch's writer reports ENOSPC as a RuntimeError
        reason = _write_failure(err, path.parent)  # before the partial file frees its space
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        log.warning("cache %s not written (%s); going on without it", path, reason)
        return False


LOW_SPACE_BYTES = 1 << 20  # free space under which a failed write is put down to a full disk


def _write_failure(err: BaseException, directory: Path) -> str:
    """Why a file could not be written, in words: the OS's, or "No space left on device" for
    torch's writer (whose message is "unexpected pos ...") on a disk that has no room left."""
    if getattr(err, "strerror", None):
        return str(err.strerror)
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        free = None
    if free is not None and free < LOW_SPACE_BYTES:
        return f"No space left on device: {free} bytes free"
    lines = str(err).strip().splitlines()
    return lines[0][:160] if lines else type(err).__name__


def _from_blob(blob: dict, fingerprint: str) -> Splits:
    return Splits(
        train=Split(blob["train_x"], blob["train_y"]),
        val=Split(blob["val_x"], blob["val_y"]),
        test=Split(blob["test_x"], blob["test_y"]),
        classes=list(blob["classes"]),
        kind="image",
        fingerprint=fingerprint,
    )


def _plain(data_cfg: DictConfig) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(data_cfg, resolve=True)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _abs(root: str | None) -> str | None:
    return str(Path(root).expanduser().resolve()) if root else None


def _cache_size(data_cfg: DictConfig) -> int:
    return int(data_cfg.cache_size or data_cfg.image_size)


# A pool is all images of the chosen classes in one split: uint8 (N, 3, S, S) and labels 0..C-1.
Pool = Split


def _read_source(data_cfg: DictConfig, progress: bool = False) -> tuple[Pool, Pool, list[str]]:
    if data_cfg.format in ("cifar10", "cifar100"):
        return _read_cifar(data_cfg, progress)
    return _read_imagefolder(data_cfg, progress)


def _bar(total: int, desc: str, progress: bool):
    """A tqdm bar on stderr; off without ``progress`` and when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=None if progress else True, leave=False)


def _select_classes(available: list[str], wanted: list[str] | None) -> list[str]:
    if not wanted:
        return list(available)
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise HpsearchError(
            f"data.classes: unknown class name(s) {unknown}; available: " + ", ".join(available)
        )
    if len(set(wanted)) != len(wanted):
        raise HpsearchError(f"data.classes: {list(wanted)} names a class twice")
    return list(wanted)


def _read_cifar(data_cfg: DictConfig, progress: bool = False) -> tuple[Pool, Pool, list[str]]:
    import torchvision

    dataset_cls = (
        torchvision.datasets.CIFAR10
        if data_cfg.format == "cifar10"
        else torchvision.datasets.CIFAR100
    )
    root = Path(data_cfg.root).expanduser()
    try:
        train = dataset_cls(str(root), train=True, download=bool(data_cfg.download))
        test = dataset_cls(str(root), train=False, download=bool(data_cfg.download))
    except RuntimeError as err:  # "Dataset not found or corrupted."
        raise HpsearchError(
            f"data.root={str(root)!r}: {data_cfg.format} not found there "
            f"({str(err).splitlines()[0]}); set data.download=true or point "
            "data.root at a downloaded copy"
        ) from None
    except OSError as err:  # the download itself failed (no network)
        raise HpsearchError(
            f"data.download: could not download {data_cfg.format} into "
            f"{str(root)!r} ({err}); without network use data=imagefolder "
            "data.root=DIR (an ImageFolder copy)"
        ) from None
    classes = _select_classes(list(train.classes), data_cfg.classes)
    size = _cache_size(data_cfg)

    def pool(ds) -> Pool:
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(ds.targets)
        index = {ds.classes.index(c): i for i, c in enumerate(classes)}
        keep = torch.tensor([int(t) in index for t in labels.tolist()])
        y = torch.tensor([index[int(t)] for t in labels[keep].tolist()], dtype=torch.long)
        kept = images[keep]
        if kept.shape[-2:] == (size, size):
            return Split(kept, y)
        with _bar(len(y), f"resizing {data_cfg.format} to {size} px", progress) as bar:
            parts = []
            for i in range(0, len(y), RESIZE_CHUNK):
                parts.append(_resize_uint8(kept[i : i + RESIZE_CHUNK], size))
                bar.update(len(parts[-1]))
        return Split(torch.cat(parts) if parts else kept, y)

    return pool(train), pool(test), classes


def _class_dirs(split_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(split_dir.iterdir()) if p.is_dir()}


def _read_imagefolder(data_cfg: DictConfig, progress: bool = False) -> tuple[Pool, Pool, list[str]]:
    root = Path(str(data_cfg.root)).expanduser()
    if not root.is_dir():
        raise HpsearchError(
            f"data.root={str(root)!r} does not exist or is not a directory; "
            "expected an ImageFolder root with train/<class>/ and test/<class>/"
        )
    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir():
        train_dir, test_dir = root, None
    available = list(_class_dirs(train_dir))
    if not available:
        raise HpsearchError(
            f"data.root={str(root)!r}: no class folders in {str(train_dir)!r}; "
            "expected <root>/train/<class>/*.jpg or <root>/<class>/*.jpg"
        )
    classes = _select_classes(available, data_cfg.classes)
    size = _cache_size(data_cfg)
    train = _decode_folder(train_dir, classes, size, progress)
    if test_dir is not None and test_dir.is_dir():
        test = _decode_folder(test_dir, classes, size, progress)
    else:
        test = Split(
            torch.zeros(0, 3, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
        )
    return train, test, classes


def _image_files(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _decode_folder(split_dir: Path, classes: list[str], size: int, progress: bool = False) -> Pool:
    import warnings

    with warnings.catch_warnings():  # torchvision 0.29 announces its decoders' move to TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode_files(split_dir, classes, size, progress)


def _decode_files(split_dir: Path, classes: list[str], size: int, progress: bool) -> Pool:
    from torchvision.io import ImageReadMode, decode_image

    listed = []
    for name in classes:
        class_dir = split_dir / name
        if not class_dir.is_dir():
            raise HpsearchError(f"data.root: class folder {str(class_dir)!r} is missing")
        files = _image_files(class_dir)
        if not files:
            raise HpsearchError(
                f"data.root: class folder {str(class_dir)!r} has no images "
                f"({', '.join(IMAGE_SUFFIXES)})"
            )
        listed.append(files)
    images, labels = [], []
    with _bar(sum(map(len, listed)), f"decoding {split_dir.name}", progress) as bar:
        for label, files in enumerate(listed):
            for f in files:
                try:
                    img = decode_image(str(f), mode=ImageReadMode.RGB)
                except Exception as err:
                    raise HpsearchError(
                        f"data.root: cannot decode image {str(f)!r} "
                        f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
                    ) from None
                if img.shape[-2:] != (size, size):
                    img = _resize_uint8(img[None], size)[0]
                images.append(img)
                labels.append(label)
                bar.update(1)
    return Split(torch.stack(images), torch.tensor(labels, dtype=torch.long))


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-2:] == (size, size):
        return images
    out = torch.nn.functional.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.round().clamp(0, 255).to(torch.uint8)


def _listing_fingerprint(data_cfg: DictConfig) -> str:
    """Cheap identity of the files on disk: count, total size and newest mtime per split."""
    if data_cfg.format != "imagefolder" or not data_cfg.root:
        return ""
    root = Path(str(data_cfg.root)).expanduser()
    if not root.is_dir():
        return ""
    parts = []
    for dirpath, _, files in sorted(os.walk(root)):
        stats = [os.stat(os.path.join(dirpath, f)) for f in files]
        if stats:
            parts.append(
                f"{dirpath}:{len(stats)}:{sum(s.st_size for s in stats)}:"
                f"{max(s.st_mtime_ns for s in stats)}"
            )
    return _digest("\n".join(parts))


def _split_train_val(pool: Pool, classes: list[str], data_cfg: DictConfig) -> tuple[Split, Split]:
    n_train, n_val = int(data_cfg.train_per_class), int(data_cfg.val_per_class)
    gen = torch.Generator().manual_seed(int(data_cfg.split_seed))
    train_idx, val_idx = [], []
    for label, name in enumerate(classes):
        idx = torch.nonzero(pool.y == label).flatten()
        if len(idx) < n_train + n_val:
            raise HpsearchError(
                f"data: class {name!r} has {len(idx)} training images but "
                f"data.train_per_class + data.val_per_class = {n_train + n_val}"
            )
        idx = idx[torch.randperm(len(idx), generator=gen)]
        train_idx.append(idx[:n_train])
        val_idx.append(idx[n_train : n_train + n_val])
    t, v = torch.cat(train_idx), torch.cat(val_idx)
    return Split(pool.x[t], pool.y[t]), Split(pool.x[v], pool.y[v])


def _take_per_class(pool: Pool, classes: list[str], per_class: int | None, seed: int) -> Split:
    if per_class is None or len(pool) == 0:
        return pool
    gen = torch.Generator().manual_seed(int(seed) + 1)
    keep = []
    for label in range(len(classes)):
        idx = torch.nonzero(pool.y == label).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=gen)][:per_class])
    k = torch.cat(keep)
    return Split(pool.x[k], pool.y[k])
