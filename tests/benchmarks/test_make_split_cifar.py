"""benchmarks/make_split_cifar.py on generated CIFAR-10 batches (no network): the ImageFolder it
writes, the source backbone it pretrains (a state_dict split_cifar loads, and its JSON record),
a rerun that keeps both, and a download without network as one line, exit 2."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli

from hpsearch.data.datasets import CIFAR10_CLASSES

SCRIPT = REPO / "benchmarks" / "make_split_cifar.py"
TRAIN_PER_BATCH = 3  # images per class in each of the 5 train batches: 15 per class
TEST_PER_CLASS = 4


def make_batches(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """CIFAR-10's python layout with a few random images per class; the images by split, as
    (N, 32, 32, 3) uint8 in file order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, fh)
    images = {"train": [], "test": []}
    files = [(f"data_batch_{i}", "train", TRAIN_PER_BATCH) for i in range(1, 6)]
    for name, split, per_class in files + [("test_batch", "test", TEST_PER_CLASS)]:
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        # smooth images (JPEG keeps them): a colour of their own and a gentle gradient
        colour = rng.integers(20, 200, size=(len(labels), 3, 1, 1))
        data = (colour + np.arange(32)[None, None, None, :] // 2).astype(np.uint8)
        data = np.broadcast_to(data, (len(labels), 3, 32, 32)).copy()
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data.reshape(len(labels), -1), b"labels": labels.tolist()}, fh)
        images[split].append((data.transpose(0, 2, 3, 1), labels))
    return {
        s: (np.concatenate([d for d, _ in parts]), np.concatenate([y for _, y in parts]))
        for s, parts in images.items()
    }


def run_script(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_from_dir_writes_the_imagefolder_and_a_loadable_source_backbone(tmp_path: Path) -> None:
    images = make_batches(tmp_path / "src" / "cifar-10-batches-py")
    root, weights = tmp_path / "cifar10", tmp_path / "weights" / "src5.pt"
    args = ["--from-dir", str(tmp_path / "src"), "--root", str(root), "--weights", str(weights)]
    proc = run_script([*args, "--smoke", "--device", "cpu"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # the layout of ../shared/data/cifar10: every class in both splits, NNNN.jpg per class
    for split, per_class in (("train", 5 * TRAIN_PER_BATCH), ("test", TEST_PER_CLASS)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(CIFAR10_CLASSES)
        for name in CIFAR10_CLASSES:
            files = sorted(p.name for p in (root / split / name).iterdir())
            assert files == [f"{i:04d}.jpg" for i in range(per_class)]
    # numbered in the dataset's order, pixels kept up to JPEG's loss
    from torchvision.io import decode_image

    data, labels = images["train"]
    second_cat = data[np.nonzero(labels == CIFAR10_CLASSES.index("cat"))[0][1]]
    decoded = decode_image(str(root / "train" / "cat" / "0001.jpg")).permute(1, 2, 0).numpy()
    assert np.abs(decoded.astype(int) - second_cat.astype(int)).mean() < 4

    state = torch.load(weights, weights_only=True)
    assert state["fc.weight"].shape == (5, 512) and "layer4.1.bn2.running_var" in state
    record = json.loads(weights.with_suffix(".json").read_text())
    shared_keys = ["arch", "num_classes", "classes", "input", "epochs", "test_acc_source", "seed"]
    assert list(record)[:7] == shared_keys
    assert record["classes"] == ["airplane", "automobile", "bird", "cat", "deer"]
    assert record["epochs"] == 1 and record["train_images"] == 5 * 15
    assert record["test_images"] == 5 * TEST_PER_CLASS and 0 <= record["test_acc_source"] <= 1

    # a rerun keeps both (no download, no training)
    mtime = weights.stat().st_mtime_ns
    again = run_script([*args, "--smoke"], tmp_path)
    assert again.returncode == 0 and "exists; kept" in again.stderr
    assert weights.stat().st_mtime_ns == mtime

    # split_cifar runs on them: the data and the state_dict load, one tiny trial
    run = run_cli(
        [
            "+experiment=split_cifar",
            f"data.root={root}",
            f"backbone.weights={weights}",
            "data.train_per_class=6",
            "data.val_per_class=4",
            "search_space=none",
            "study.n_trials=1",
            "hp.epochs=1",
            "ft.epochs=1",
            "progress=false",
        ],
        tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "trial 0:" in run.stdout + run.stderr


def test_from_dir_reads_the_tarball(tmp_path: Path) -> None:
    make_batches(tmp_path / "unpacked" / "cifar-10-batches-py")
    (tmp_path / "dl").mkdir()
    with tarfile.open(tmp_path / "dl" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "unpacked" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    root = tmp_path / "cifar10"
    proc = run_script(
        ["--from-dir", str(tmp_path / "dl"), "--root", str(root), "--steps", "data"]
        + ["--download-dir", str(tmp_path / "downloads")],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((root / "test").rglob("*.jpg"))) == 10 * TEST_PER_CLASS


def test_download_without_network_is_one_line(tmp_path: Path) -> None:
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused
    env = {k: closed for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
    env.update(no_proxy="", NO_PROXY="")
    proc = run_script(
        ["--root", str(tmp_path / "c10"), "--download-dir", str(tmp_path / "dl")], tmp_path, env
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(
        "make_split_cifar: error: could not download CIFAR-10"
    ), proc.stderr
    assert "--from-dir" in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "c10").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "train"], "--steps='train': allowed"),
        (["--epochs", "0"], "--epochs=0 is invalid"),
        (["--from-dir", "nowhere", "--steps", "data"], "neither cifar-10-batches-py/ nor"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_script([*args, "--root", str(tmp_path / "c10")], tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
