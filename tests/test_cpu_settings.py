"""python -m hpsearch sets OpenMP's passive wait policy before torch loads OpenMP, unless the
environment already says otherwise; the local launcher's workers inherit it."""

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


def test_every_worker_of_workers_n_gets_the_policy() -> None:
    """workers=2 on 2 cores: one OpenMP thread each, where the policies measured alike (1.00-1.05x);
    the policy stays for machines where cores / N is more than one thread."""
    from hpsearch.app import compose_config, set_openmp_defaults
    from hpsearch.study.launcher import worker_env

    env: dict[str, str] = {}
    set_openmp_defaults(env)
    cfg = compose_config(["workers=2"])
    assert [worker_env(cfg, i, env)["OMP_WAIT_POLICY"] for i in range(2)] == ["PASSIVE"] * 2


def test_the_cli_sets_the_policy_before_torch_is_imported(tmp_path) -> None:
    """OpenMP reads its environment once, when torch loads it: main() must come first, and the
    OpenMP that torch then loads does not spin (OMP_DISPLAY_ENV=VERBOSE: what libgomp, the OpenMP
    of torch's Linux wheels, read; with the policy unset it spins 300,000 rounds, then sleeps)."""
    probe = (
        "import sys, os\n"
        "from hpsearch import app\n"
        "assert 'torch' not in sys.modules, 'torch imported before main()'\n"
        "sys.argv = ['hpsearch', 'study.n_trials=0', '--cfg', 'job']\n"
        "try:\n"
        "    app.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('policy', os.environ.get('OMP_WAIT_POLICY'), flush=True)\n"
        "import torch\n"
        "torch.ones(4).sum()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
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
    assert "GOMP_SPINCOUNT = '0'" in [line.strip() for line in out.stderr.splitlines()]
