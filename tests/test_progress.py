"""Progress bars (tqdm, on stderr) for the long silent steps: decoding a dataset into the cache
and a replay. Shown when stderr is a terminal and ``progress`` is on; quiet otherwise."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from imagedata import make_imagefolder
from tabledata import make_table_study, spread_values

from hpsearch.app import compose_config
from hpsearch.data import load_splits
from hpsearch.review.replay import draw_orders, load_table, replay


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(params=["terminal", "pipe", "off"])
def stderr(request, monkeypatch: pytest.MonkeyPatch):
    """(install, progress, whether a bar must show); install() puts the stream in place of
    sys.stderr (after the config is composed) and returns it."""
    stream = Terminal() if request.param != "pipe" else io.StringIO()

    def install() -> io.StringIO:
        monkeypatch.setattr(sys, "stderr", stream)
        return stream

    return install, request.param != "off", request.param == "terminal"


def test_decoding_shows_a_bar_on_a_terminal_only(stderr, tmp_path: Path) -> None:
    install, progress, shown = stderr
    root = make_imagefolder(tmp_path / "ds", ["cat", "dog"], train_per_class=6, test_per_class=2)
    cfg = compose_config(
        [
            "data=imagefolder",
            f"data.root={root}",
            "data.train_per_class=4",
            "data.val_per_class=2",
            "backbone=resnet18",
            "backbone.weights=none",
        ]
    )
    stream = install()
    splits = load_splits(cfg.data, tmp_path / "cache", progress)
    assert len(splits.train) == 8
    text = stream.getvalue()
    assert ("decoding train" in text and "/12" in text and "decoding test" in text) == shown
    assert text == "" or shown, text


def test_replay_shows_a_bar_on_a_terminal_only(stderr, tmp_path: Path) -> None:
    install, progress, shown = stderr
    table = load_table(make_table_study(f"sqlite:///{tmp_path}/t.db", "t", spread_values(6)))
    pruners = {"none": compose_config(["pruner=none"]), "median": compose_config(["pruner=median"])}
    stream = install()
    replay(table, pruners, draw_orders(6, 3, 4, seed=0), processes=1, progress=progress)
    text = stream.getvalue()
    assert ("replay" in text and "/6" in text) == shown, text
    assert text == "" or shown, text
