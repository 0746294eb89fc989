"""Trials per hour with K workers sharing one GPU (``workers_per_device=K``), on split-CIFAR.

For each K (default 1, 2, 4, 8) the same ``--trials`` trials (trial numbers 0..T-1 of a fresh
study, so the same seeds, on the split-CIFAR experiment with 1,000 images per class, τ = 4, 8 FT
epochs) run through the product's launcher, exactly as a user starts it:

    CUDA_VISIBLE_DEVICES=g python -m hpsearch +experiment=split_cifar ... \\
        workers=K devices=[g] workers_per_device=K study.n_trials=T/K

Measured per K: trials per hour in the steady state (T / (last completion - first start), from
the study's own timestamps: process start-up and data loading do not count) and over the whole
command (start-up included), the mean FT seconds per trial, and GPU memory per worker — the peak
``torch.cuda.max_memory_allocated`` each worker logs when it ends, and the peak memory
nvidia-smi shows per worker process (CUDA context included; polled every 0.5 s). The ratio of
trials per hour against K = 1 is the packing gain (target: >= 3x at the best K). With
``--reps R`` the Ks run in the order 1 2 4 8 8 4 2 1 ... and the table shows mean ± 95% interval.
The data is decoded and the copied part's outputs cached once before any timed run.

    python benchmarks/gpu_packing.py --data-root ../shared/data/cifar10 \\
        --weights ../shared/weights/resnet18_cifar10_src5.pt [--gpu 0] [--ks 1 2 4 8] \\
        [--trials 16] [--reps 1] [--json out.json]
    python benchmarks/gpu_packing.py --smoke   # the code path on generated images, any machine

``--smoke`` runs on tiny generated images with a random ResNet-18 at K = 1, 2 (2 trials, one
HP and one FT epoch) on whatever device ``device=auto`` finds (without CUDA its K workers run on
the CPU, no ``devices``): its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402
from pruning import make_smoke_inputs  # noqa: E402  (benchmarks/pruning.py)

from hpsearch.stats import t_quantile  # noqa: E402

PEAK_LINE = re.compile(r"peak GPU memory of this worker: (\d+) MiB")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root")
    ap.add_argument("--weights")
    ap.add_argument("--gpu", default="0", help="the GPU every K shares (CUDA_VISIBLE_DEVICES)")
    ap.add_argument("--ks", type=int, nargs="+", default=None, help="default: 1 2 4 8")
    ap.add_argument(
        "--trials",
        type=int,
        default=None,
        help="trials per run, a multiple of every K (default: 16; smoke: 2)",
    )
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="default: a fresh temporary folder")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--smoke", action="store_true", help="generated images, K = 1 2, 2 trials")
    ap.add_argument("--override", nargs="*", default=[], help="more config overrides")
    args = ap.parse_args(argv)
    args.ks = args.ks or ([1, 2] if args.smoke else [1, 2, 4, 8])
    args.trials = args.trials or (2 if args.smoke else 16)
    if not args.smoke and not (args.data_root and args.weights):
        ap.error("--data-root and --weights are required (or --smoke)")
    if min(args.ks) < 1 or args.reps < 1 or args.trials < 1:
        ap.error("--ks, --reps and --trials must be >= 1")
    bad = [k for k in args.ks if args.trials % k]
    if bad:
        ap.error(
            f"--trials {args.trials} must be a multiple of every K (not of {bad}), so that "
            "every K runs the same trials"
        )
    return args


def base_overrides(args: argparse.Namespace, workdir: Path) -> list[str]:
    out = [
        "+experiment=split_cifar",
        f"data.root={args.data_root}",
        f"backbone.weights={args.weights}",
        "search_space=none",
        "study.sampler=random",
        "pruner=none",
        "progress=false",
        "hp.epochs=4",
        "ft.epochs=8",
        f"storage.cache_dir={workdir / 'cache'}",
        f"storage.logs={workdir / 'logs'}",
        f"storage.artifacts={workdir / 'artifacts'}",
    ]
    if args.smoke:
        out += [
            "data.train_per_class=6",
            "data.val_per_class=2",
            "data.image_size=16",
            "data.eval_batch_size=16",
            "hp.epochs=1",
            "ft.epochs=1",
            "hp.batch_size=10",
            "ft.batch_size=10",
        ]
    return out + list(args.override)


class GpuMemoryPoller:
    """Peak used memory per process on one GPU, from nvidia-smi every 0.5 s (when present)."""

    def __init__(self, gpu: str) -> None:
        self.gpu, self.peaks, self.peak_total = gpu, {}, 0
        self.available = shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> GpuMemoryPoller:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    [
                        "nvidia-smi",
                        "-i",
                        self.gpu,
                        "--query-compute-apps=pid,used_memory",
                        "--format=csv,noheader,nounits",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout
            except (OSError, subprocess.SubprocessError):
                return
            total = 0
            for line in out.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[1].isdigit():
                    self.peaks[parts[0]] = max(self.peaks.get(parts[0], 0), int(parts[1]))
                    total += int(parts[1])
            self.peak_total = max(self.peak_total, total)
            self._stop.wait(0.5)


def run_k(
    args: argparse.Namespace, workdir: Path, base: list[str], k: int, rep: int
) -> dict[str, Any]:
    """One launcher run with K workers on the GPU; its throughput and memory."""
    import optuna

    name = f"pack-k{k}-r{rep}"
    db = workdir / f"{name}.db"
    cmd = [
        sys.executable,
        "-m",
        "hpsearch",
        *base,
        f"study.name={name}",
        f"storage.url=sqlite:///{db}",
        f"study.n_trials={args.trials // k}",
    ]
    if k > 1:
        cmd += [f"workers={k}"]
        if not (args.smoke and not torch.cuda.is_available()):  # devices must exist
            cmd += [f"devices=[{args.gpu}]", f"workers_per_device={k}"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": args.gpu, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    with GpuMemoryPoller(args.gpu) as poller:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"K={k}: the run failed (exit {proc.returncode}): " + " | ".join(tail))
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    done = [
        t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE
    ]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    steady_s = (last - first).total_seconds()
    peaks = [int(m) for m in PEAK_LINE.findall(proc.stdout + proc.stderr)]
    return {
        "k": k,
        "rep": rep,
        "trials": len(done),
        "wall_s": wall,
        "steady_s": steady_s,
        "trials_per_hour": 3600 * len(done) / steady_s if steady_s > 0 else math.nan,
        "trials_per_hour_with_startup": 3600 * len(done) / wall,
        "ft_s_per_trial": statistics.fmean(t.user_attrs["wall_ft_s"] for t in done),
        "val_acc_mean": statistics.fmean(t.value for t in done),
        "torch_peak_mib_per_worker": peaks,
        "smi_peak_mib_per_process": sorted(poller.peaks.values()),
        "smi_peak_mib_total": poller.peak_total if poller.available else None,
    }


def interval(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    n = len(values)
    half = t_quantile(0.95, n - 1) * statistics.stdev(values) / math.sqrt(n) if n > 1 else math.nan
    return mean, half


def warm_caches(args: argparse.Namespace, workdir: Path, base: list[str]) -> None:
    """Decode the images and cache the copied part's outputs, outside every timed run."""
    cmd = [
        sys.executable,
        "-m",
        "hpsearch",
        *base,
        "study.name=warmup",
        f"storage.url=sqlite:///{workdir / 'warmup.db'}",
        "study.n_trials=1",
        "ft.epochs=1",
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": args.gpu, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit("warm-up failed: " + (proc.stdout + proc.stderr).strip()[-600:])


def summarize(runs: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    by_k = {k: [r for r in runs if r["k"] == k] for k in ks}
    base = {r["rep"]: r["trials_per_hour"] for r in by_k[ks[0]]}
    table = {}
    for k, rs in by_k.items():
        tph = interval([r["trials_per_hour"] for r in rs])
        gain = interval([r["trials_per_hour"] / base[r["rep"]] for r in rs])
        torch_peak = max((m for r in rs for m in r["torch_peak_mib_per_worker"]), default=None)
        smi_peak = max((m for r in rs for m in r["smi_peak_mib_per_process"]), default=None)
        smi_total = max((r["smi_peak_mib_total"] or 0 for r in rs), default=0) or None
        table[k] = {
            "trials_per_hour": tph,
            "gain_vs_first_k": gain,
            "trials_per_hour_with_startup": interval(
                [r["trials_per_hour_with_startup"] for r in rs]
            ),
            "ft_s_per_trial": interval([r["ft_s_per_trial"] for r in rs]),
            "torch_peak_mib_per_worker": torch_peak,
            "smi_peak_mib_per_process": smi_peak,
            "smi_peak_mib_total": smi_total,
        }
    return table


def print_table(table: dict[int, dict[str, Any]], ks: list[int], trials: int) -> None:
    def pm(pair: tuple[float, float], spec: str) -> str:
        mean, half = pair
        return f"{mean:{spec}}" + ("" if math.isnan(half) else f" ± {half:{spec}}")

    def mib(v: Any) -> str:
        return "n/a" if v is None else f"{v}"

    print(f"{trials} trials per run; trials/hour in the steady state (start-up excluded)")
    print(
        f"| K | trials/hour | × K={ks[0]} | trials/hour incl. start-up | FT s/trial | "
        "peak MiB/worker (torch) | peak MiB/process (nvidia-smi) | peak MiB all workers |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k in ks:
        row = table[k]
        print(
            f"| {k} | {pm(row['trials_per_hour'], '.0f')} | {pm(row['gain_vs_first_k'], '.2f')}"
            f" | {pm(row['trials_per_hour_with_startup'], '.0f')} | "
            f"{pm(row['ft_s_per_trial'], '.2f')} | {mib(row['torch_peak_mib_per_worker'])} | "
            f"{mib(row['smi_peak_mib_per_process'])} | {mib(row['smi_peak_mib_total'])} |"
        )
    best = max(ks, key=lambda k: table[k]["trials_per_hour"][0])
    print(
        f"best K = {best}: {table[best]['gain_vs_first_k'][0]:.2f}x the trials per hour of "
        f"K = {ks[0]} (target >= 3x)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hpsearch-packing-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        data, weights = make_smoke_inputs(workdir)
        args.data_root, args.weights = str(data), str(weights)
    base = base_overrides(args, workdir)
    warm_caches(args, workdir, base)
    runs = []
    for rep in range(args.reps):
        for k in args.ks if rep % 2 == 0 else list(reversed(args.ks)):
            run = run_k(args, workdir, base, k, rep)
            print(
                f"K={k} rep {rep}: {run['trials']} trials, {run['trials_per_hour']:.0f} "
                f"trials/hour (steady), {run['wall_s']:.0f} s in all",
                flush=True,
            )
            runs.append(run)
    table = summarize(runs, args.ks)
    print_table(table, args.ks, args.trials)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "settings": {
                        "ks": args.ks,
                        "trials": args.trials,
                        "reps": args.reps,
                        "gpu": args.gpu,
                        "smoke": args.smoke,
                        "overrides": base,
                    },
                    "runs": runs,
                    "table": {str(k): v for k, v in table.items()},
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
