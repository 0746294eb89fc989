"""python -m hpsearch sets OpenMP's passive wait policy before torch loads OpenMP, unless the
environment already says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_defaults_fill_only_what_is_unset() -> None:
    from hpsearch.app import OPENMP_DEFAULTS, set_openmp_defaults

    env: dict[str, str] = {}
    set_openmp_defaults(env)
    assert env == OPENMP_DEFAULTS == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    set_openmp_defaults(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_the_cli_sets_the_policy_before_torch_is_imported(tmp_path) -> None:
    """OpenMP reads its environment once, when torch loads it: main() must come first."""
    probe = (
        "import sys, os\n"
        "from hpsearch import app\n"
        "assert 'torch' not in sys.modules, 'torch imported before main()'\n"
        "sys.argv = ['hpsearch', 'study.n_trials=0', '--cfg', 'job']\n"
        "try:\n"
        "    app.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('policy', os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "policy PASSIVE"
