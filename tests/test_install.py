"""`pip install .` (not editable) works: the wheel carries the Hydra configs, and the toy runs from
a directory that is not the checkout, whether the tests run on a system interpreter or inside a
virtual environment.

The fresh venv must see the packages of the interpreter that runs the tests (torch, optuna, ...)
without a network. ``venv --system-site-packages`` is not enough: made from inside a venv, the new
venv's "system" is the base interpreter, which lacks what was installed into the outer venv. So
the fresh venv gets a ``.pth`` file naming the running interpreter's site directories: they come
after the venv's own site-packages on ``sys.path``, so hpsearch itself comes from the wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def site_dirs(python: Path | str) -> list[str]:
    """The site directories (site-packages, dist-packages) on ``python``'s ``sys.path``."""
    out = subprocess.run(
        [str(python), "-c", "import json, sys; print(json.dumps(sys.path))"],
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [
        p
        for p in json.loads(out)
        if p.rstrip("/").endswith(("site-packages", "dist-packages")) and Path(p).is_dir()
    ]


def venv_seeing(python: Path | str, venv: Path) -> Path:
    """A venv made by ``python`` whose ``sys.path`` ends with ``python``'s site directories (as
    plain paths: their own .pth files, e.g. an editable hpsearch, stay inactive); its python."""
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True, env=ENV)
    new = venv / "bin" / "python"
    own = site_dirs(new)
    assert len(own) == 1 and own[0].startswith(str(venv)), own
    outer = [p for p in site_dirs(python) if p not in own]
    (Path(own[0]) / "_hpsearch_test_outer.pth").write_text("\n".join(outer) + "\n")
    return new


def wheel_runs_the_toy_elsewhere(python: Path | str, tmp_path: Path) -> Path:
    """Build the wheel (with the interpreter running the tests), install it into a fresh venv
    that ``python`` makes and that sees ``python``'s packages, run the toy from another
    directory; the fresh venv's python."""
    src = tmp_path / "src"  # building writes build/ and *.egg-info: never into the checkout
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "conf", src / "conf")
    shutil.copytree(
        REPO / "hpsearch",
        src / "hpsearch",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(wheels), str(src)],
        check=True,
        env=ENV,
        cwd=tmp_path,
    )
    wheel = next(wheels.glob("hpsearch-*.whl"))

    fresh = venv_seeing(python, tmp_path / "venv")
    subprocess.run(
        [str(fresh), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, env=ENV
    )
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    where = subprocess.run(
        [str(fresh), "-c", "import hpsearch; print(hpsearch.__file__)"],
        cwd=run_dir,
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(tmp_path / "venv") in where.stdout, where.stdout
    proc = subprocess.run(
        [str(fresh), "-m", "hpsearch", "study.n_trials=2", "progress=false"],
        cwd=run_dir,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trial 1:" in proc.stderr + proc.stdout
    assert (run_dir / "storage" / "hpsearch.db").exists()
    return fresh


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_toy_from_another_directory(tmp_path: Path) -> None:
    """From the interpreter that runs the tests (a system one, or a venv)."""
    wheel_runs_the_toy_elsewhere(sys.executable, tmp_path)


@pytest.mark.slow
def test_the_same_from_inside_a_venv_sees_the_outer_venvs_packages(tmp_path: Path) -> None:
    """Run from inside a venv ("outer") that has a package of its own, which the base
    interpreter lacks: the fresh venv sees it, as it must see a user's torch and hydra there
    (``--system-site-packages`` would give it the base interpreter's packages only)."""
    outer = venv_seeing(sys.executable, tmp_path / "outer")
    (Path(site_dirs(outer)[0]) / "hpsearch_outer_probe.py").write_text("WHERE = 'outer'\n")
    base = subprocess.run(
        [sys.executable, "-c", "import hpsearch_outer_probe"], env=ENV, capture_output=True
    )
    assert base.returncode != 0  # only the outer venv has it
    fresh = wheel_runs_the_toy_elsewhere(outer, tmp_path / "inner")
    probe = subprocess.run(
        [str(fresh), "-c", "import hpsearch_outer_probe as p; print(p.WHERE)"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "outer", probe.stderr
