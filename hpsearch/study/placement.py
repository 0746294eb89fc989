"""Where a worker runs: its index among the study's workers (sampler seed offset) and, for
compose replicas that all see every GPU, a GPU slot of its own claimed by a lock file
(``HPSEARCH_WORKERS_PER_DEVICE`` slots per GPU: several small trials share one GPU)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import IO

from omegaconf import DictConfig

from hpsearch.errors import HpsearchError

WORKER_INDEX_ENV = "HPSEARCH_WORKER_INDEX"
GPU_LOCK_DIR_ENV = "HPSEARCH_GPU_LOCK_DIR"
WORKERS_PER_DEVICE_ENV = "HPSEARCH_WORKERS_PER_DEVICE"
_claimed: list[IO[str]] = []  # open lock files: a GPU stays claimed while this process lives


def worker_index(storage_url: str = "") -> int:
    """This worker's index: its sampler seed is ``study.seed + index`` so that workers do not
    sample the same parameters. ``HPSEARCH_WORKER_INDEX``: an integer (the launcher sets 0..N-1),
    or ``auto`` for a value derived from the host name and process id (replicas that cannot be
    numbered, e.g. docker compose --scale). Unset: ``auto`` for a database server (workers on
    many machines run the same command), 0 for SQLite (one process stays reproducible)."""
    value = os.environ.get(WORKER_INDEX_ENV, "").strip()
    if not value:
        value = "0" if storage_url.startswith("sqlite") else "auto"
    if value == "auto":
        return zlib.crc32(f"{os.uname().nodename}:{os.getpid()}".encode()) % 1_000_000 + 1
    try:
        return int(value)
    except ValueError:
        raise HpsearchError(
            f"{WORKER_INDEX_ENV}={value!r} is invalid: must be an integer or auto"
        ) from None


def workers_per_device() -> int:
    """``HPSEARCH_WORKERS_PER_DEVICE``: how many compose replicas may share one GPU (default 1)."""
    value = os.environ.get(WORKERS_PER_DEVICE_ENV, "").strip() or "1"
    try:
        k = int(value)
    except ValueError:
        k = 0
    if k < 1:
        raise HpsearchError(
            f"{WORKERS_PER_DEVICE_ENV}={value!r} is invalid: must be an integer "
            ">= 1 (how many workers share each GPU)"
        )
    return k


def claim_gpu(lock_dir: str, n_devices: int, per_device: int = 1) -> tuple[int, int]:
    """A free (GPU, slot) of this host's ``n_devices`` GPUs with ``per_device`` slots each: an
    exclusive ``flock`` on ``<lock_dir>/gpu-<i>-<slot>.lock``, kept until this process ends (the
    kernel releases it even after kill -9). Slot 0 of every GPU is taken before slot 1 of any,
    so the workers spread evenly over the GPUs. HpsearchError when every slot is taken."""
    import fcntl

    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    for slot in range(per_device):
        for i in range(n_devices):
            handle = open(Path(lock_dir) / f"gpu-{i}-{slot}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.uname().nodename} pid {os.getpid()}\n")
            handle.flush()
            _claimed.append(handle)
            return i, slot
    raise HpsearchError(
        f"{GPU_LOCK_DIR_ENV}={lock_dir}: all {n_devices} GPUs x {per_device} "
        f"slots ({WORKERS_PER_DEVICE_ENV}={per_device}) of this host are taken by "
        f"other workers; run at most {n_devices * per_device} workers here or "
        f"raise {WORKERS_PER_DEVICE_ENV}"
    )


def pin_to_free_gpu(cfg: DictConfig) -> DictConfig:
    """With ``HPSEARCH_GPU_LOCK_DIR`` set (docker compose replicas, which all see every GPU),
    give this worker a GPU slot of its own: ``device=cuda:<i>`` for the GPU whose slot it
    claimed (``HPSEARCH_WORKERS_PER_DEVICE`` slots per GPU). Without it, or without CUDA, or
    with an explicit ``device=cuda:N``/``cpu``, ``cfg`` is returned as is."""
    lock_dir = os.environ.get(GPU_LOCK_DIR_ENV, "").strip()
    if not lock_dir:
        return cfg
    per_device = workers_per_device()  # a bad value fails on any machine, GPU or not
    if str(cfg.device) not in ("auto", "cuda"):
        return cfg
    import torch

    if not torch.cuda.is_available():
        return cfg
    index, _ = claim_gpu(lock_dir, torch.cuda.device_count(), per_device)
    torch.cuda.set_device(index)
    pinned = cfg.copy()
    pinned.device = f"cuda:{index}"
    return pinned
