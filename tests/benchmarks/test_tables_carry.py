"""benchmarks/tables_carry.py: the packed ImageFolder gives the tables the same splits, and the
packed backbone rebuilds exactly (or refuses)."""

from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import REPO
from imagedata import make_imagefolder

SPEC = importlib.util.spec_from_file_location("tables_carry", REPO / "benchmarks/tables_carry.py")
carry = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(carry)


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Three classes, 12 train and 2 test images each; two tables of other classes and sizes."""
    monkeypatch.setattr(carry, "TARGET", ["c0", "c1", "c2"])
    monkeypatch.setattr(carry, "TABLES", {"all": (["c0", "c1", "c2"], 3), "two": (["c0", "c2"], 2)})
    monkeypatch.setattr(carry, "VAL_PER_CLASS", 2)
    return make_imagefolder(tmp_path / "root", ["c0", "c1", "c2"], 12, 2)


def selection(root: Path) -> dict:
    return {name: carry.selected_files(root, c, n) for name, (c, n) in carry.TABLES.items()}


def test_packed_folder_gives_every_table_the_same_splits(tiny: Path, tmp_path: Path) -> None:
    sel = selection(tiny)
    assert [len(v) for v in sel["all"].values()] == [5, 5, 5]  # 3 train + 2 validation
    tar = carry.pack_data(tiny, tmp_path, sel)
    with tarfile.open(tar) as t:
        names = t.getnames()
        links = [m for m in t.getmembers() if m.islnk()]
    assert sum(n.startswith("cifar10/train/c1/") for n in names) == 12  # the whole listing
    real = len({(c, f) for s in sel.values() for c, v in s.items() for f in v})
    assert len(links) == 36 - real - 1  # the first grey placeholder is the file the others link
    carry.check(tiny, tar)  # exits unless train, validation and test tensors are identical


def test_check_fails_when_a_selected_image_was_not_packed(tiny: Path, tmp_path: Path) -> None:
    sel = selection(tiny)
    sel["two"] = {c: [] for c in sel["two"]}
    sel["all"]["c2"] = sel["all"]["c2"][:-1]  # "two" draws other c2 files than "all"
    tar = carry.pack_data(tiny, tmp_path, sel)
    with pytest.raises(SystemExit, match="differs from the original"):
        carry.check(tiny, tar)


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    net(torch.randn(2, 3, 8, 8))  # running statistics and num_batches_tracked (int64)
    return net.state_dict()


def test_weights_rebuild_exactly(tmp_path: Path) -> None:
    state = _state()
    torch.save(state, tmp_path / "w.pt")
    pack = carry.pack_weights(tmp_path / "w.pt", tmp_path)
    carry.unpack_weights(pack, tmp_path / "back.pt")
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def test_weights_with_a_changed_byte_are_refused(tmp_path: Path) -> None:
    torch.save(_state(), tmp_path / "w.pt")
    path = carry.pack_weights(tmp_path / "w.pt", tmp_path)
    pack = torch.load(path, weights_only=True)
    pack["planes"][0][5] ^= 1  # one mantissa bit of one value
    torch.save(pack, path)
    with pytest.raises(SystemExit, match="digest differs"):
        carry.unpack_weights(path, tmp_path / "back.pt")
