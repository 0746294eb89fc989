"""Where workers run: workers_per_device for the local launcher (devices and env of each worker)
and for compose replicas (GPU slots claimed with flock by separate processes), and the errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

# A replica as a separate process: claim a slot, print it, hold it until stdin closes.
CLAIM = (
    "import sys; from hpsearch.study.placement import claim_gpu\n"
    "try:\n"
    "    gpu, slot = claim_gpu(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))\n"
    "except Exception as err:\n"
    "    print(f'error: {err}', flush=True); sys.exit(2)\n"
    "print(f'{gpu} {slot}', flush=True); sys.stdin.read()\n"
)


def claimer(lock_dir: Path, n_devices: int, per_device: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(lock_dir), str(n_devices), str(per_device)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def release(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.stdin.close()
            p.wait(timeout=60)


def test_worker_i_gets_device_i_mod_len_and_a_share_of_the_cores() -> None:
    from hpsearch.app import compose_config
    from hpsearch.study.launcher import worker_env

    cfg = compose_config(["workers=8", "devices=[0,1]", "workers_per_device=4"])
    envs = [worker_env(cfg, i, {}) for i in range(8)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1"] * 4  # 4 on each GPU
    assert [e["HPSEARCH_WORKER_INDEX"] for e in envs] == [str(i) for i in range(8)]
    cores = max(1, (os.cpu_count() or 1) // 8)
    assert all(e["OMP_NUM_THREADS"] == str(cores) for e in envs)
    assert worker_env(cfg, 0, {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"  # user's wins
    cfg = compose_config(["workers=3", "devices=[2,5,7]", "workers_per_device=2"])
    assert [worker_env(cfg, i, {})["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["2", "5", "7"]
    cfg = compose_config(["workers=2"])  # CPU workers: no device, half the cores each
    assert all("CUDA_VISIBLE_DEVICES" not in worker_env(cfg, i, {}) for i in range(2))


def test_workers_per_device_is_not_passed_to_the_workers() -> None:
    from hpsearch.study.launcher import worker_args

    assert worker_args(
        [
            "workers=4",
            "devices=[0]",
            "workers_per_device=4",
            "+workers_per_device=2",
            "study.n_trials=3",
        ]
    ) == ["study.n_trials=3"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["workers_per_device=0"], r"^workers_per_device=0 is invalid: must be >= 1$"),
        (
            ["workers=2", "workers_per_device=2"],
            r"^workers_per_device=2 is invalid: must be 1 without devices=\[\.\.\.\]",
        ),
        (
            ["workers=5", "devices=[0,1]", "workers_per_device=2"],
            r"^workers=5 is invalid: must be <= workers_per_device x len\(devices\) = 2 x 2 = 4; ",
        ),
        (["workers=2", "devices=[0]"], r"^workers=2 is invalid: must be <= .* = 1 x 1 = 1; raise "),
        (["workers_per_device=abc"], r"workers_per_device"),
    ],
)
def test_bad_launcher_options_are_one_line_errors(overrides: list[str], message: str) -> None:
    from hpsearch.app import compose_config
    from hpsearch.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as err:
        compose_config(overrides)
    assert "\n" not in str(err.value)


def test_cli_rejects_workers_beyond_the_gpu_slots_with_exit_2(tmp_path: Path) -> None:
    from conftest import run_cli

    result = run_cli(
        ["workers=3", "devices=[0]", "workers_per_device=2"], cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "hpsearch: error: workers=3 is invalid: must be <= workers_per_device x len(devices) = "
        "2 x 1 = 2; raise workers_per_device to run more workers on each GPU"
    ]
    assert not (tmp_path / "storage").exists()  # nothing created


def test_replicas_claim_distinct_slots_spread_over_the_gpus(tmp_path: Path) -> None:
    """Six processes started at once on 2 GPUs x 3 slots take every slot once; a seventh is
    refused; when one ends, its slot is free for the next."""
    lock_dir = tmp_path / "locks"
    procs = [claimer(lock_dir, 2, 3) for _ in range(6)]
    try:
        claims = [tuple(map(int, p.stdout.readline().split())) for p in procs]
        assert sorted(claims) == [(g, s) for g in range(2) for s in range(3)]
        extra = claimer(lock_dir, 2, 3)
        out, _ = extra.communicate(timeout=60)
        assert extra.returncode == 2
        assert out.strip() == (
            f"error: HPSEARCH_GPU_LOCK_DIR={lock_dir}: all 2 GPUs x 3 slots "
            "(HPSEARCH_WORKERS_PER_DEVICE=3) of this host are taken by other "
            "workers; run at most 6 workers here or raise "
            "HPSEARCH_WORKERS_PER_DEVICE"
        )
        gone = procs[claims.index((1, 2))]
        release([gone])
        again = claimer(lock_dir, 2, 3)
        procs.append(again)
        assert tuple(map(int, again.stdout.readline().split())) == (1, 2)
    finally:
        release(procs)


def test_claims_fill_slot_0_of_every_gpu_first(tmp_path: Path) -> None:
    """One after another, replicas alternate over the GPUs: K small trials per GPU, evenly."""
    procs = []
    try:
        for _ in range(4):
            procs.append(claimer(tmp_path, 2, 2))
            procs[-1].stdout.readline()  # wait for its claim before the next starts
        names = sorted(p.name for p in tmp_path.glob("gpu-*.lock"))
        assert names == ["gpu-0-0.lock", "gpu-0-1.lock", "gpu-1-0.lock", "gpu-1-1.lock"]
        holders = {p.read_text().split()[-1] for p in tmp_path.glob("gpu-*.lock")}
        assert holders == {str(p.pid) for p in procs}
    finally:
        release(procs)


def test_killed_replica_frees_its_slot(tmp_path: Path) -> None:
    first = claimer(tmp_path, 1, 1)
    second = None
    try:
        assert first.stdout.readline().split() == ["0", "0"]
        first.kill()  # kill -9: the kernel drops the flock with the process
        first.wait(timeout=60)
        second = claimer(tmp_path, 1, 1)
        assert second.stdout.readline().split() == ["0", "0"]
    finally:
        release([first] + ([second] if second else []))


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_workers_per_device_env_is_one_line_error(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omegaconf import OmegaConf

    from hpsearch.errors import HpsearchError
    from hpsearch.study.placement import pin_to_free_gpu

    monkeypatch.setenv("HPSEARCH_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("HPSEARCH_WORKERS_PER_DEVICE", value)
    with pytest.raises(
        HpsearchError,
        match=rf"^HPSEARCH_WORKERS_PER_DEVICE='{value}' is "
        r"invalid: must be an integer >= 1 \(how many "
        r"workers share each GPU\)$",
    ):
        pin_to_free_gpu(OmegaConf.create({"device": "auto"}))


def test_workers_per_device_env_defaults_to_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpsearch.study.placement import workers_per_device

    monkeypatch.delenv("HPSEARCH_WORKERS_PER_DEVICE", raising=False)
    assert workers_per_device() == 1
    monkeypatch.setenv("HPSEARCH_WORKERS_PER_DEVICE", " 4 ")
    assert workers_per_device() == 4
