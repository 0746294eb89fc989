"""Datasets: split sizes, disjointness, class subsets, the decode cache, batched augmentation."""

from __future__ import annotations

import pytest
import torch
from imagedata import make_imagefolder

from hpsearch.app import compose_config
from hpsearch.data import load_splits
from hpsearch.data.pipeline import InputPipeline, random_crop_flip
from hpsearch.errors import HpsearchError


def image_cfg(root, *extra):
    return compose_config(
        [
            "data=imagefolder",
            f"data.root={root}",
            "data.train_per_class=5",
            "data.val_per_class=3",
            "backbone=resnet18",
            "backbone.weights=none",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_imagefolder(
        tmp_path_factory.mktemp("img") / "ds",
        ["cat", "dog", "eel"],
        train_per_class=9,
        test_per_class=4,
    )


def test_imagefolder_splits_by_class_disjoint_and_cached(folder, tmp_path):
    cfg = image_cfg(folder, "data.classes=[eel,cat]")
    splits = load_splits(cfg.data, tmp_path)
    assert splits.classes == ["eel", "cat"]
    assert torch.bincount(splits.train.y).tolist() == [5, 5]
    assert torch.bincount(splits.val.y).tolist() == [3, 3]
    assert torch.bincount(splits.test.y).tolist() == [4, 4]
    assert splits.train.x.dtype == torch.uint8 and splits.train.x.shape[1:] == (3, 32, 32)
    # eel images are class 2 in generation: their colour identifies them (see imagedata).
    flat = lambda x: {bytes(img.flatten().tolist()) for img in x}
    assert not flat(splits.train.x) & flat(splits.val.x)  # validation disjoint from train
    again = load_splits(cfg.data, tmp_path)  # second load comes from the cache
    assert torch.equal(again.train.x, splits.train.x) and again.fingerprint == splits.fingerprint
    assert len(list((tmp_path / "data").glob("*.pt"))) == 1


def test_too_few_images_per_class_is_an_error(folder, tmp_path):
    cfg = image_cfg(folder, "data.train_per_class=8")
    with pytest.raises(HpsearchError, match="class 'cat' has 9 training images"):
        load_splits(cfg.data, tmp_path)


def test_tensor_file_round_trip_and_count_check(folder, tmp_path):
    cfg = image_cfg(folder)
    splits = load_splits(cfg.data, tmp_path)
    cache_file = next((tmp_path / "data").glob("*.pt"))
    same = load_splits(
        image_cfg(cache_file, "data.format=tensors", "data.test_per_class=4").data, tmp_path
    )
    assert torch.equal(same.val.x, splits.val.x) and same.classes == splits.classes
    with pytest.raises(HpsearchError, match="data.train_per_class=6"):
        load_splits(
            image_cfg(cache_file, "data.format=tensors", "data.train_per_class=6").data, tmp_path
        )


def test_random_crop_flip_is_a_shifted_window_and_deterministic():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    a = random_crop_flip(x, padding=2, flip=True, gen=torch.Generator().manual_seed(0))
    b = random_crop_flip(x, padding=2, flip=True, gen=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):  # every output is some window of the padded image, possibly mirrored
        windows = [padded[i, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(2)) for w in windows)
    no_aug = random_crop_flip(x, padding=0, flip=False, gen=torch.Generator())
    assert torch.equal(no_aug, x)


def test_pipeline_resizes_and_normalises(folder):
    cfg = image_cfg(
        folder, "data.image_size=64", "data.mean=[0.5,0.5,0.5]", "data.std=[0.5,0.5,0.5]"
    )
    pipe = InputPipeline(cfg.data, "image", torch.device("cpu"))
    out = pipe(torch.full((2, 3, 32, 32), 255, dtype=torch.uint8))
    assert out.shape == (2, 3, 64, 64)
    torch.testing.assert_close(out, torch.ones_like(out))
