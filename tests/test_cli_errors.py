"""Every bad input: one line on stderr naming the problem, exit code 2, the stored study intact."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from conftest import run_cli
from imagedata import make_imagefolder

TINY_TOY = ["study.n_trials=1", "ft.epochs=1", "hp.epochs=1", "search_space=none", "progress=false"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A working directory with one stored toy study and a tiny ImageFolder dataset."""
    work = tmp_path_factory.mktemp("cli")
    done = run_cli(TINY_TOY, cwd=work)
    assert done.returncode == 0, done.stderr
    make_imagefolder(work / "images", ["cat", "dog"], train_per_class=6, test_per_class=2)
    empty = make_imagefolder(work / "empty", ["cat", "dog"], train_per_class=6, test_per_class=2)
    for f in (empty / "train" / "dog").iterdir():
        f.unlink()
    broken = make_imagefolder(work / "broken", ["cat", "dog"], train_per_class=6, test_per_class=2)
    (broken / "train" / "cat" / "0003.png").write_bytes(b"not an image at all")
    torch.save({"stages.0.weight": torch.zeros(16, 32)}, work / "linear.pt")
    return work


def stored(work: Path) -> list[tuple[str, int]]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{work}/storage/hpsearch.db")
    return [(s.study_name, s.n_trials) for s in optuna.get_all_study_summaries(storage)]


IMAGES = [
    "data=imagefolder",
    "backbone=resnet18",
    "backbone.weights=none",
    "data.train_per_class=4",
    "data.val_per_class=2",
    "search_space=none",
]

CASES = {
    "unknown experiment": (["+experiment=nope"], "Could not find 'experiment/nope'"),
    "invalid search space": (
        ["search_space={hp.epochs: {type: int, low: 40, high: 32}}"],
        "low=40 > high=32",
    ),
    "epsilon outside [0, 1)": (["hp.label_smoothing=1.0"], "hp.label_smoothing=1.0"),
    "negative epochs": (["ft.epochs=-2"], "ft.epochs=-2"),
    "layers_copied outside stages": (["backbone.layers_copied=3"], "backbone.layers_copied=3"),
    "unknown backbone": (["backbone=vgg"], "Could not find 'backbone/vgg'"),
    "wrong value type": (["hp.epochs=many"], "could not be converted to Integer"),
    "missing data root": ([*IMAGES, "data.root={work}/nowhere"], "does not exist"),
    "empty class folder": ([*IMAGES, "data.root={work}/empty"], "has no images"),
    "unreadable image": ([*IMAGES, "data.root={work}/broken"], "cannot decode image"),
    "unknown class name": (
        [*IMAGES, "data.root={work}/images", "data.classes=[cat,cow]"],
        "unknown class name(s) ['cow']",
    ),
    "weights file missing": (
        [*IMAGES, "data.root={work}/images", "backbone.weights={work}/none.pt"],
        "file not found",
    ),
    "weights of the wrong architecture": (
        [*IMAGES, "data.root={work}/images", "backbone.weights={work}/linear.pt"],
        "does not fit backbone.arch=resnet18",
    ),
    "unreachable storage": (
        ["storage.url=postgresql+psycopg2://u:hunter2@127.0.0.1:1/db"],
        "cannot open storage",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_keeps_the_study(setup, case):
    args, message = CASES[case]
    before = stored(setup)
    result = run_cli(
        [a.replace("{work}", str(setup)) for a in args] + ["study.n_trials=1"], cwd=setup
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("hpsearch: error")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert stored(setup) == before == [("toy", 1)]
