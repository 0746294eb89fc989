"""Inputs that used to be accepted silently or to end in a traceback: each is one line naming the
key, exit code 2, before anything runs (issue 21, items 6-8)."""

from __future__ import annotations

import pytest
import torch
from conftest import run_cli

from hpsearch.app import compose_config
from hpsearch.config import STUDY_NAME_MAX_BYTES
from hpsearch.errors import ConfigError, HpsearchError

IMAGES = ["data=imagefolder", "data.root=/nowhere", "backbone=resnet18", "backbone.weights=none"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["study.name=" + "x" * (STUDY_NAME_MAX_BYTES + 1)], "is invalid (201 bytes long)"),
        (["study.name='" + "é" * 101 + "'"], "is invalid (202 bytes long)"),
        (["study.name=a/b"], "is invalid (a path"),
        (["study.name=../up"], "is invalid (a path"),
        (["study.name='a\\tb'"], "control character"),
        (["study.name=.."], "'.', '..' or padded"),
        (["study.name=' padded'"], "padded with white space"),
        (["study.name=''"], "is invalid (empty)"),
        (["data.classes=[]", *IMAGES], "data.classes=[] is invalid: must be null"),
        (["data.classes=[nope]"], "must be null for data.format=synthetic"),
        (["data.classes=[]"], "must be null for data.format=synthetic"),
        (["pruner.min_prob=1.5"], "pruner.min_prob must be in (0, 1) but got 1.5"),
        (["pruner=median", "pruner.min_prob=0"], "pruner.min_prob must be in (0, 1) but got 0.0"),
        (["pruner.reduction_factor=1"], "pruner.reduction_factor=1 is invalid"),
        (
            ["pruner=energy", "pruner.params=[hp.lr]"],
            "each a categorical of search_space where searched (hp.lr is not)",
        ),
        (
            ["pruner=energy", "pruner.params=[a,a]"],
            "pruner.params=['a', 'a'] is invalid: must be a list of distinct",
        ),
        (["ft.epochs=0"], "ft.epochs=0 is invalid: must be >= 1: the objective"),
    ],
)
def test_config_is_refused_with_the_key_named(overrides, message):
    with pytest.raises(ConfigError) as err:
        compose_config(overrides)
    text = str(err.value)
    assert message in text and "\n" not in text and len(text) < 300, text


@pytest.mark.parametrize("name", ["toy", "🙂", "Étude-2 (τ=4)", "x" * STUDY_NAME_MAX_BYTES])
def test_ordinary_and_unicode_study_names_pass(name):
    assert compose_config([f"study.name='{name}'"]).study.name == name


def test_a_long_name_is_cut_in_the_message():
    with pytest.raises(ConfigError) as err:
        compose_config(["study.name=" + "y" * 5000])
    assert "(5000 characters)" in str(err.value) and "y" * 50 not in str(err.value)


def test_an_unquoted_emoji_says_how_to_quote_it():
    with pytest.raises(ConfigError) as err:
        compose_config(["study.name=🙂"])
    assert str(err.value).startswith("study.name=🙂: Hydra's override syntax does not accept")
    assert "'study.name=\"🙂\"'" in str(err.value)


def test_empty_weights_file_is_one_line(tmp_path):
    from hpsearch.models import load_state_dict_file

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(HpsearchError, match=r"the file is empty \(0 bytes\)"):
        load_state_dict_file(torch.nn.Linear(2, 2), empty, "linear")
    truncated = tmp_path / "truncated.pt"
    torch.save({"w": torch.zeros(3)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:20])
    with pytest.raises(HpsearchError, match=r"not a loadable state_dict \(\w+"):
        load_state_dict_file(torch.nn.Linear(2, 2), truncated, "linear")


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpsearch: error: "), result.stderr
    return lines[0]


def test_cli_refuses_empty_weights_long_names_and_unknown_devices(workdir):
    """Through the command line: the empty weights file (an IndexError before), a name too long
    for a file name with workers=2 and in mode=report, devices=[7] with one worker on a machine
    without GPU 7 (the CPU before, without a word)."""
    (workdir / "empty.pt").write_bytes(b"")
    line = _one_error_line(run_cli(["backbone.weights=empty.pt", "study.n_trials=1"], workdir))
    assert "backbone.weights='empty.pt': the file is empty" in line
    long_name = "study.name=" + "n" * 300
    for extra in (["workers=2"], ["mode=report"]):
        line = _one_error_line(run_cli([long_name, *extra], workdir))
        assert "study.name='nnnn" in line and "(300 bytes long)" in line
    visible = torch.cuda.device_count()
    line = _one_error_line(run_cli([f"devices=[{visible + 7}]", "study.n_trials=1"], workdir))
    assert line.startswith(f"hpsearch: error: devices=['{visible + 7}'] is invalid: this machine")
    assert not list(workdir.rglob("nnnnnnnnnn*"))  # no folder of the long name was made
