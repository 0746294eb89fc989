"""`pip install .` (not editable) works: the wheel carries the Hydra configs, and the toy runs from
a directory that is not the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_wheel_in_a_fresh_venv_runs_the_toy_from_another_directory(tmp_path: Path):
    src = tmp_path / "src"  # building writes build/ and *.egg-info: never into the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "conf", src / "conf")
    shutil.copytree(
        REPO / "hpsearch",
        src / "hpsearch",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(src),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    wheel = next(wheels.glob("hpsearch-*.whl"))

    # The venv sees this interpreter's packages (torch, optuna, ...) but gets hpsearch only from
    # the wheel: its own site-packages come first on sys.path.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, env=env
    )

    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import hpsearch; print(hpsearch.__file__)"],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(venv) in where.stdout, where.stdout
    proc = subprocess.run(
        [str(python), "-m", "hpsearch", "study.n_trials=2", "progress=false"],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trial 1:" in proc.stderr + proc.stdout
    assert (run_dir / "storage" / "hpsearch.db").exists()
