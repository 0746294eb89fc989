"""Where a trial's time goes, on the split-CIFAR benchmark (../shared/BENCHMARK.md).

Prints, measured in one run:
  - feature extraction: the copied part's outputs for train/val/test (the cache HP trains on);
  - one HP epoch on cached features vs one HP epoch through the frozen backbone (target >= 100x);
  - one FT epoch, and the share of it spent outside the model's forward/backward/step
    (batch indexing, augmentation, resize, normalisation; target <= 10%);
  - settings side by side ("arms"): the FT epoch and an evaluation pass (validation split,
    under no_grad and under inference_mode) with the layout and OpenMP settings of before
    (``today``: NCHW, OpenMP's default wait policy), channels_last alone, the passive wait
    policy alone, and the defaults now (``new``: channels_last, passive), each in a warm
    process of its own, measured one at a time in the order A B C D D C B A ... over ``--reps``
    repetitions so that other jobs on the shared machine slow every arm alike: wall and CPU
    time per arm with a 95% interval and the spread, and the paired speed-up against
    ``today`` (target for ``new`` by wall time: >= 1.25x on the CPU); ``--threads 1 2`` adds
    the new defaults at those thread counts;
  - the validation accuracy of one full trial with tau = 4 (``--skip-trial`` leaves it out);
  - with ``--wait-policy`` (and nothing else): OpenMP's default wait policy against PASSIVE,
    both in channels_last, as workers run: for each ``--workers`` N, N processes of a policy
    (each with the environment ``workers=N`` gives it) run an FT epoch at once, the policies in
    ABBA order; for each ``--load`` L, with L busy-loop processes of this script's own running
    alongside (0: the machine as it is). Per case: the FT epoch's wall and CPU time per policy
    with a 95% interval, the paired ratio default/PASSIVE, and the 1-min load average around
    each measurement;
  - with ``--compare-trial``: one fixed-seed trial, run as a worker runs it, in NCHW, in
    channels_last and in NCHW at another thread count, and how far each metric moved.

    python benchmarks/pipeline.py --data-root ../shared/data/cifar10 \
        --weights ../shared/weights/resnet18_cifar10_src5.pt [--device cpu] [--ft-epochs 8]
    # the arms alone, in the low-data regime (100 images per class), 6 repetitions:
    python benchmarks/pipeline.py --data-root ... --weights ... --only-arms --reps 6 \
        --override data.train_per_class=100
    # the wait policy, one worker and workers=2, idle and with 2 busy loops:
    python benchmarks/pipeline.py --data-root ... --weights ... --wait-policy --workers 1 2 \
        --load 0 2 --reps 8 --override data.train_per_class=100
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpsearch.app import OPENMP_DEFAULTS, compose_config, set_openmp_defaults  # noqa: E402

# As `python -m hpsearch` does, before torch loads OpenMP; an arm's process (--serve) keeps
# exactly the environment its arm set.
if __name__ == "__main__" and "--serve" not in sys.argv:
    set_openmp_defaults()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hpsearch.data.features import CachedOutputs, FrozenOutputs  # noqa: E402
from hpsearch.models import build_transfer_net, eval_mode  # noqa: E402
from hpsearch.study.launcher import worker_env  # noqa: E402
from hpsearch.trial import Workspace  # noqa: E402
from hpsearch.trial.ft import Finetuner, accuracy  # noqa: E402
from hpsearch.trial.hp import head_probe  # noqa: E402
from hpsearch.trial.metrics import batched  # noqa: E402
from hpsearch.trial.optim import epoch_batches  # noqa: E402
from hpsearch.trial.workspace import Task  # noqa: E402

# Two-sided 95% Student t quantiles by degrees of freedom (1..10); 1.96 beyond.
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def interval(values: Sequence[float]) -> dict[str, float]:
    """Mean, half-width of its 95% t-interval, and the spread (min, max) of the values."""
    n = len(values)
    mean = statistics.fmean(values)
    half = T95.get(n - 1, 1.96) * statistics.stdev(values) / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "half": half, "min": min(values), "max": max(values), "n": n}


def fmt(stats: dict[str, float], unit: str = "", spec: str = ".2f") -> str:
    return (
        f"{stats['mean']:{spec}}{unit} ± {stats['half']:{spec}} (95%, n={stats['n']}; "
        f"spread {stats['min']:{spec}}–{stats['max']:{spec}})"
    )


def interleaved(arms: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Each arm's measurement ``reps`` times, in the order A B ... then ... B A (ABBA), so that a
    slow stretch of the shared machine falls on every arm alike."""
    names = list(arms)
    out: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            out[name].append(arms[name]())
    return out


def paired_ratio(slow: list[float], fast: list[float]) -> dict[str, float]:
    """slow / fast per repetition (each pair measured back to back), with its interval."""
    return interval([a / b for a, b in zip(slow, fast)])


# Settings compared for the FT epoch, each in a worker process of its own (OpenMP reads its
# environment once): the memory layout, and OpenMP's wait policy (None: unset, OpenMP's default).
ARMS = {
    "today": {"channels_last": "false", "OMP_WAIT_POLICY": None},  # before: NCHW on the CPU
    "channels_last": {"channels_last": "true", "OMP_WAIT_POLICY": None},
    "passive": {"channels_last": "false", "OMP_WAIT_POLICY": "PASSIVE"},
    "new": {"channels_last": "auto", **OPENMP_DEFAULTS},  # the defaults now
}


def serve_epochs(cfg) -> None:
    """The child's side: build one Finetuner, run a warm-up epoch, then answer ``ft`` (one
    timed FT epoch) and ``eval`` (the validation split under no_grad and inference_mode) on
    stdin with a JSON line each; the process waits on stdin between measurements."""
    ws = Workspace(cfg)
    task = ws.task(cfg)
    net = build_transfer_net(
        task.pretrained, cfg.backbone, cfg.head, task.input_dim, task.splits.n_classes, 0
    ).to(ws.device)
    if task.pipeline.channels_last:
        net = net.to(memory_format=torch.channels_last)
    eval_bs = int(cfg.data.eval_batch_size)
    tuner = Finetuner(
        net, task.splits.train, task.splits.val, task.pipeline, cfg.ft, 0, eval_bs, ws.autocast
    )
    tuner.train_epoch()  # warm-up: allocator, oneDNN/cuDNN kernel choice

    def measure(fn: Callable[[], Any]) -> dict[str, float]:
        sync(ws.device)
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        sync(ws.device)
        return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}

    def evaluation(ctx) -> Callable[[], Any]:
        def run() -> None:
            with ctx(), eval_mode(net):
                batched(lambda x: net(task.pipeline(x)).float(), task.splits.val.x, eval_bs)

        return run

    print(
        json.dumps(
            {
                "ready": True,
                "threads": torch.get_num_threads(),
                "channels_last": task.pipeline.channels_last,
                "train": len(task.splits.train),
                "val": len(task.splits.val),
            }
        ),
        flush=True,
    )
    for n, line in enumerate(sys.stdin):
        if line.strip() == "ft":
            print(json.dumps(measure(tuner.train_epoch)), flush=True)
        elif line.strip() == "eval":
            modes = [("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)]
            out = {
                name: measure(evaluation(ctx))
                for name, ctx in (modes if n % 2 == 0 else modes[::-1])
            }
            print(json.dumps(out), flush=True)
        else:
            return


def arm_env(settings: dict[str, Any], base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (this process's environment) with the arm's OpenMP settings; None unsets one."""
    env = dict(os.environ if base is None else base)
    for key, value in settings.items():
        if key.startswith("OMP_"):
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
    return env


class Arm:
    """A child process of this script in ``--serve`` mode, with the arm's settings (in the
    environment ``env``, default: this process's with the arm's OpenMP settings)."""

    def __init__(
        self,
        name: str,
        settings: dict[str, Any],
        argv: list[str],
        env: dict[str, str] | None = None,
    ) -> None:
        env = arm_env(settings) if env is None else env
        cmd = [
            sys.executable,
            __file__,
            "--serve",
            *argv,
            f"channels_last={settings['channels_last']}",
        ]
        self.name = name
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(
                f"arm {self.name}: the measuring process exited (code {self.proc.wait()})"
            )
        return json.loads(line)

    def send(self, what: str) -> None:
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        return self._read()

    def ask(self, what: str) -> dict[str, Any]:
        self.send(what)
        return self.receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=120)


def arm_comparison(
    arms: dict[str, dict[str, Any]], child_argv: list[str], reps: int
) -> dict[str, Any]:
    """The FT epoch and an evaluation pass under each arm's settings, in warm child processes
    measured one at a time, in the order A B ... then ... B A (ABBA) so that a busy stretch of
    the shared machine falls on every arm alike."""
    started: dict[str, Arm] = {}
    try:
        for name, settings in arms.items():  # one after another: the first decodes the data
            started[name] = Arm(name, settings, child_argv)
        ft = interleaved({name: (lambda a=a: a.ask("ft")) for name, a in started.items()}, reps)
        ev = interleaved({name: (lambda a=a: a.ask("eval")) for name, a in started.items()}, reps)
    finally:
        for arm in started.values():
            arm.close()
    first = next(iter(started.values())).info
    n_train, n_val = first["train"], first["val"]
    print(
        f"FT epoch ({n_train} images) and evaluation ({n_val} images) per arm, {reps} "
        "repetitions interleaved (ABBA), each arm a warm process of its own:"
    )
    result: dict[str, Any] = {
        "reps": reps,
        "train_images": n_train,
        "val_images": n_val,
        "arms": {},
    }
    base = next(iter(arms))
    for name, arm in started.items():
        walls = [m["wall"] for m in ft[name]]
        cpus = [m["cpu"] for m in ft[name]]
        env = ", ".join(f"{k}={v if v is not None else 'unset'}" for k, v in arms[name].items())
        print(
            f"  {name} ({env}; threads {arm.info['threads']}, channels_last "
            f"{arm.info['channels_last']}):"
        )
        print(
            f"    FT epoch wall {fmt(interval(walls), ' s')}, "
            f"{n_train / statistics.fmean(walls):.0f} images/s; CPU {fmt(interval(cpus), ' s')}"
        )
        entry: dict[str, Any] = {
            "settings": arms[name],
            "threads": arm.info["threads"],
            "ft_wall_s": walls,
            "ft_cpu_s": cpus,
        }
        for mode in ("no_grad", "inference_mode"):
            entry[f"eval_wall_s_{mode}"] = [m[mode]["wall"] for m in ev[name]]
            entry[f"eval_cpu_s_{mode}"] = [m[mode]["cpu"] for m in ev[name]]
        for kind in ("wall", "cpu"):
            speed = paired_ratio(
                entry[f"eval_{kind}_s_no_grad"], entry[f"eval_{kind}_s_inference_mode"]
            )
            print(
                f"    evaluation {kind} no_grad "
                f"{fmt(interval(entry[f'eval_{kind}_s_no_grad']), ' s')}; inference_mode "
                f"{fmt(interval(entry[f'eval_{kind}_s_inference_mode']), ' s')}; speed-up "
                f"inference_mode vs no_grad {fmt(speed, 'x')}"
            )
            entry[f"eval_speedup_inference_mode_{kind}"] = speed
        if name != base:
            for kind in ("wall", "cpu"):
                r = paired_ratio(result["arms"][base][f"ft_{kind}_s"], entry[f"ft_{kind}_s"])
                entry[f"ft_speedup_{kind}_vs_{base}"] = r
                target = " (target >= 1.25x)" if name == "new" and kind == "wall" else ""
                print(f"    FT epoch speed-up vs {base} by {kind} time: {fmt(r, 'x')}{target}")
            for kind in ("wall", "cpu"):
                r = paired_ratio(
                    result["arms"][base][f"eval_{kind}_s_no_grad"],
                    entry[f"eval_{kind}_s_inference_mode"],
                )
                entry[f"eval_speedup_{kind}_vs_{base}"] = r
                print(
                    f"    evaluation speed-up (inference_mode) vs {base} (no_grad) by {kind} "
                    f"time: {fmt(r, 'x')}"
                )
        result["arms"][name] = entry
    # The layout alone: arms that differ only in channels_last (measured next to each other).
    for nchw, cl in (("today", "channels_last"), ("passive", "new")):
        if nchw in result["arms"] and cl in result["arms"]:
            a, b = result["arms"][nchw], result["arms"][cl]
            policy = arms[nchw]["OMP_WAIT_POLICY"] or "unset"
            for what, key in (("FT epoch", "ft_{}_s"), ("evaluation", "eval_{}_s_no_grad")):
                for kind in ("wall", "cpu"):
                    r = paired_ratio(a[key.format(kind)], b[key.format(kind)])
                    result[f"layout_speedup_{what.split()[0].lower()}_{kind}_{policy}"] = r
                    print(
                        f"  channels_last vs NCHW (OMP_WAIT_POLICY={policy}), {what}, by "
                        f"{kind} time: {fmt(r, 'x')}"
                    )
    return result


# OpenMP's wait policies compared as workers run (None: unset, OpenMP's own), both in the
# layout a ResNet gets by default on the CPU (channels_last).
WAIT_POLICIES = {"default": None, "PASSIVE": "PASSIVE"}


def workers_envs(cfg, policy: str | None, workers: int) -> list[dict[str, str]]:
    """The environment of each process of ``python -m hpsearch workers=N`` with this policy: one
    worker is the command itself (torch's default thread count); N > 1 are the launcher's
    workers, each with its ``worker_env`` (``OMP_NUM_THREADS`` = cores / N unless set)."""
    env = arm_env({"OMP_WAIT_POLICY": policy})
    if workers == 1:
        return [env]
    launcher_cfg = cfg.copy()
    launcher_cfg.workers = workers
    return [worker_env(launcher_cfg, index, env) for index in range(workers)]


@contextmanager
def background_load(n: int) -> Iterator[list[subprocess.Popen]]:
    """``n`` busy-loop processes (each keeps one core busy) while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux's /proc/stat; nan
    elsewhere): all processes', ours and other jobs' alike."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return math.nan
    ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def concurrent_epochs(groups: dict[str, list[Any]], reps: int) -> dict[str, list[dict]]:
    """``reps`` measurements of each group of warm processes, groups in ABBA order; one
    measurement starts an FT epoch in every process of the group at once and waits for all of
    them: each process's wall and CPU time, the 1-min load average before and after, and the
    cores kept busy by everything else meanwhile (other jobs, busy loops: the machine's busy
    CPU time less the group's, over the measurement's wall time)."""

    def once(arms: list[Any]) -> dict[str, Any]:
        load_before, busy_before, start = os.getloadavg()[0], busy_cpu_seconds(), time.monotonic()
        for arm in arms:
            arm.send("ft")
        got = [arm.receive() for arm in arms]
        elapsed, busy = time.monotonic() - start, busy_cpu_seconds() - busy_before
        return {
            "wall": [m["wall"] for m in got],
            "cpu": [m["cpu"] for m in got],
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "other_cores": max(0.0, busy - sum(m["cpu"] for m in got)) / elapsed,
        }

    return interleaved(
        {name: (lambda arms=arms: once(arms)) for name, arms in groups.items()}, reps
    )


def wait_policy_case(runs: dict[str, list[dict]], label: str) -> dict[str, Any]:
    """One case's numbers (per policy: the FT epoch's wall and CPU time, the mean over the
    processes of a measurement) and the paired ratio default/PASSIVE, printed and returned."""
    loads = [m[k] for ms in runs.values() for m in ms for k in ("load_before", "load_after")]
    others = [m["other_cores"] for ms in runs.values() for m in ms]
    print(
        f"  {label}; 1-min load average {min(loads):.1f}–{max(loads):.1f}; cores busy with "
        f"other work {statistics.fmean(others):.2f} (spread {min(others):.2f}–{max(others):.2f}):"
    )
    case: dict[str, Any] = {
        "load_average": [min(loads), max(loads)],
        "other_cores": interval(others),
        "policies": {},
    }
    for name, ms in runs.items():
        walls = [statistics.fmean(m["wall"]) for m in ms]
        cpus = [statistics.fmean(m["cpu"]) for m in ms]
        other = statistics.fmean(m["other_cores"] for m in ms)
        print(
            f"    {name:>7}: FT epoch wall {fmt(interval(walls), ' s')}; CPU "
            f"{fmt(interval(cpus), ' s')}; other work {other:.2f} cores"
        )
        case["policies"][name] = {
            "ft_wall_s": walls,
            "ft_cpu_s": cpus,
            "wall": interval(walls),
            "cpu": interval(cpus),
            "measurements": ms,
        }
    first, second = list(case["policies"])
    ratio = paired_ratio(
        case["policies"][first]["ft_wall_s"], case["policies"][second]["ft_wall_s"]
    )
    print(f"    {first}/{second} by wall time: {fmt(ratio, 'x')}")
    case[f"ratio_wall_{first}_over_{second}"] = ratio
    return case


def wait_policy_comparison(
    cfg, child_argv: list[str], workers: list[int], loads: list[int], reps: int
) -> dict[str, Any]:
    """OpenMP's default wait policy against PASSIVE for each number of workers (warm processes,
    started once per N) and each background load: ``wait_policy_case`` per (N, load)."""
    print(
        f"FT epoch per policy (channels_last), {reps} repetitions interleaved (ABBA); N workers: "
        "N processes of a policy run an epoch at once (wall and CPU: the mean over them):"
    )
    cases: list[dict[str, Any]] = []
    for n in workers:
        groups: dict[str, list[Arm]] = {name: [] for name in WAIT_POLICIES}
        try:
            for name, policy in WAIT_POLICIES.items():
                settings = {"channels_last": "auto", "OMP_WAIT_POLICY": policy}
                for index, env in enumerate(workers_envs(cfg, policy, n)):
                    groups[name].append(Arm(f"{name}/{index}", settings, child_argv, env))
            threads = groups["default"][0].info["threads"]
            images = groups["default"][0].info["train"]
            for load in loads:
                start = time.perf_counter()
                with background_load(load):
                    runs = concurrent_epochs(groups, reps)
                where = "idle (no load of ours)" if load == 0 else f"loaded ({load} busy loops)"
                label = (
                    f"{where}, {n} worker{'s' if n > 1 else ''} ({threads} torch threads each, "
                    f"{images} images an epoch), {time.perf_counter() - start:.0f} s"
                )
                case = wait_policy_case(runs, label)
                cases.append(
                    {"workers": n, "threads": threads, "load": load, "train_images": images, **case}
                )
        finally:
            for arm in (a for group in groups.values() for a in group):
                arm.close()
    return {"reps": reps, "cases": cases}


# The metrics of a trial compared across layouts (all of them are float or lists of floats).
TRIAL_METRICS = (
    "energy",
    "hp_train_acc",
    "hp_train_loss",
    "hp_val_acc",
    "head_norm",
    "ft_val_acc_curve",
    "ft_val_acc",
    "test_acc",
    "adaptation_l2",
    "adaptation_cos",
    "feature_norm_T",
    "feature_norm_0",
)


def one_trial(cfg, threads: int | None = None) -> dict[str, Any]:
    """Trial 0 of a fresh in-memory study with ``cfg``, as a worker runs it; its user attrs."""
    import optuna

    from hpsearch.plan import plan_study
    from hpsearch.trial import Objective

    default = torch.get_num_threads()
    torch.set_num_threads(threads or default)
    try:
        study = optuna.create_study(direction="maximize")
        study.optimize(Objective(cfg, plan_study(cfg), Workspace(cfg)), n_trials=1)
    finally:
        torch.set_num_threads(default)
    return dict(study.trials[0].user_attrs)


def trial_comparison(cfg, cache_dir: str) -> dict[str, Any]:
    """One fixed-seed trial in the NCHW layout, in channels_last, and in NCHW at a different
    thread count (how far floating-point reordering alone moves the metrics); each arm computes
    its own feature cache."""
    arms = {
        "nchw": ("false", None),
        "channels_last": ("true", None),
        "nchw_other_threads": ("false", 1 if torch.get_num_threads() > 1 else 2),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (layout, threads) in arms.items():
        arm_cfg = cfg.copy()
        arm_cfg.channels_last = layout
        arm_cfg.storage.cache_dir = str(Path(cache_dir) / f"trial-{name}")
        start = time.perf_counter()
        attrs = one_trial(arm_cfg, threads)
        out[name] = {k: attrs[k] for k in TRIAL_METRICS}
        print(
            f"  {name:>18}: FT val acc {attrs['ft_val_acc']:.4f}, test acc "
            f"{attrs['test_acc']:.4f}, energy {attrs['energy']:.5f}, adaptation_l2 "
            f"{attrs['adaptation_l2']:.4f} ({time.perf_counter() - start:.0f} s)"
        )
    diffs = {}
    for other in ("channels_last", "nchw_other_threads"):
        diffs[other] = max_abs_diffs(out["nchw"], out[other])
        print(
            f"  |nchw - {other}| per metric (max over a curve): "
            + ", ".join(f"{k} {v:.2g}" for k, v in diffs[other].items())
        )
    return {"metrics": out, "max_abs_diff_vs_nchw": diffs}


def max_abs_diffs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    def flat(v: Any) -> list[float]:
        return [float(x) for x in v] if isinstance(v, list) else [float(v)]

    return {k: max(abs(x - y) for x, y in zip(flat(a[k]), flat(b[k]))) for k in a}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ft-epochs", type=int, default=8)
    parser.add_argument(
        "--reps", type=int, default=4, help="repetitions of the arm comparison (0: leave it out)"
    )
    parser.add_argument(
        "--only-arms", action="store_true", help="only the arm comparison (and --compare-trial)"
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=list(ARMS),
        default=list(ARMS),
        help="the arms compared (the first is the base of the speed-ups)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="*",
        default=[],
        help="add arms 'new' at these torch thread counts, e.g. --threads 1 2",
    )
    parser.add_argument("--skip-trial", action="store_true", help="leave out the full trial")
    parser.add_argument(
        "--compare-trial",
        action="store_true",
        help="one fixed-seed trial (as a worker runs it) in both layouts, and "
        "in NCHW at another thread count: how far the metrics move",
    )
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    parser.add_argument(
        "--override",
        nargs="*",
        default=[],
        help="extra config overrides, e.g. data.train_per_class=100",
    )
    parser.add_argument(
        "--wait-policy",
        action="store_true",
        help="only OpenMP's default wait policy vs PASSIVE, for each --workers and --load",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="with --wait-policy: N processes run FT epochs at once, as workers=N starts them",
    )
    parser.add_argument(
        "--load",
        type=int,
        nargs="+",
        default=[0],
        help="with --wait-policy: busy-loop processes running alongside (0: none of ours)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reps < 0 or any(n < 1 for n in args.threads):
        parser.error("--reps must be >= 0 and --threads >= 1")
    if any(n < 1 for n in args.workers) or any(n < 0 for n in args.load):
        parser.error("--workers must be >= 1 and --load >= 0")

    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="hpsearch-bench-")
    cfg = compose_config(
        [
            "+experiment=split_cifar",
            f"data.root={args.data_root}",
            f"backbone.weights={args.weights}",
            f"device={args.device}",
            "search_space=none",
            "hp.epochs=4",
            f"ft.epochs={args.ft_epochs}",
            f"storage.cache_dir={cache_dir}",
            "progress=false",
            *args.override,
        ]
    )
    if args.serve:
        serve_epochs(cfg)
        return
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"channels_last={cfg.channels_last}"
    )
    numbers: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "overrides": list(args.override),
    }
    child_argv = [
        "--data-root",
        args.data_root,
        "--weights",
        args.weights,
        "--device",
        args.device,
        "--cache-dir",
        cache_dir,
        "--override",
        *args.override,
    ]
    if args.wait_policy:  # this comparison alone
        numbers["wait_policy"] = wait_policy_comparison(
            cfg, child_argv, args.workers, args.load, max(args.reps, 1)
        )
        if args.json:
            Path(args.json).write_text(json.dumps(numbers, indent=2))
        return
    if not args.only_arms:
        ws = Workspace(cfg)
        t_data, task = timed(lambda: ws.task(cfg), ws.device)
        n_total = len(task.splits.train) + len(task.splits.val) + len(task.splits.test)
        print(
            f"device {ws.device}; decode + load data ({n_total} images, first run decodes "
            f"JPEGs): {t_data:.2f} s"
        )
        numbers.update({"device": str(ws.device), "train_images": len(task.splits.train)})
        numbers.update(trial_sections(cfg, ws, task, n_total, args.skip_trial))
    if args.reps:
        arms = {name: ARMS[name] for name in args.arms}
        for n in args.threads:
            arms[f"new/{n} threads"] = {**ARMS["new"], "OMP_NUM_THREADS": n}
        numbers["arms"] = arm_comparison(arms, child_argv, args.reps)
    if args.compare_trial:
        print(
            f"one trial (seed of trial 0, tau={cfg.hp.epochs}, {cfg.ft.epochs} FT epochs) in "
            "each layout:"
        )
        numbers["trial_layouts"] = trial_comparison(cfg, cache_dir)
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=2))


def trial_sections(
    cfg, ws: Workspace, task: Task, n_total: int, skip_trial: bool
) -> dict[str, Any]:
    """Feature extraction, HP cached vs frozen, the FT epoch's input share, one full trial."""
    device = ws.device

    def fresh_net(seed: int = 0):
        net = build_transfer_net(
            task.pretrained, cfg.backbone, cfg.head, 3, task.splits.n_classes, seed
        ).to(device)
        return net.to(memory_format=torch.channels_last) if task.pipeline.channels_last else net

    net = fresh_net()
    t_feat, got = timed(lambda: ws.copied_outputs(cfg, task, net), device)
    outputs, how = got
    print(
        f"feature extraction ({n_total} images, {how}): {t_feat:.2f} s "
        f"({n_total / t_feat:.0f} images/s)"
    )

    hp_one = cfg.copy()
    hp_one.hp.epochs = 1
    y_train, y_val = task.splits.train.y, task.splits.val.y
    eval_bs = int(cfg.data.eval_batch_size)
    cached_net = fresh_net()  # built outside the timing: a fresh ResNet's init is not HP
    head_probe(fresh_net(), outputs, y_train, y_val, hp_one.hp, 0, eval_bs, ws.autocast)  # warm-up
    t_hp_cached, _ = timed(
        lambda: head_probe(cached_net, outputs, y_train, y_val, hp_one.hp, 0, eval_bs, ws.autocast),
        device,
    )
    frozen_net = fresh_net()
    frozen = FrozenOutputs(frozen_net.copied, task.splits, task.pipeline, False, ws.autocast)
    t_hp_frozen, _ = timed(
        lambda: head_probe(frozen_net, frozen, y_train, y_val, hp_one.hp, 0, eval_bs, ws.autocast),
        device,
    )
    print(
        f"one HP epoch (incl. its train/val evaluation): cached {t_hp_cached * 1e3:.1f} ms, "
        f"through the frozen backbone {t_hp_frozen:.2f} s -> ratio "
        f"{t_hp_frozen / t_hp_cached:.0f}x (target >= 100x)"
    )

    # One FT epoch, then the same number of steps of forward/backward/step alone on a batch
    # prepared in advance: the difference is what the input pipeline costs.
    net = fresh_net()
    tuner = Finetuner(
        net, task.splits.train, task.splits.val, task.pipeline, cfg.ft, 0, eval_bs, ws.autocast
    )
    tuner.train_epoch()  # warm-up (allocator, kernels)
    t_epoch, _ = timed(tuner.train_epoch, device)
    steps = list(
        epoch_batches(
            len(task.splits.train), int(cfg.ft.batch_size), torch.Generator().manual_seed(1)
        )
    )
    gen = torch.Generator().manual_seed(2)
    t_inputs, _ = timed(
        lambda: [task.pipeline(task.splits.train.x[idx], augment=True, gen=gen) for idx in steps],
        device,
    )
    inputs = task.pipeline(task.splits.train.x[steps[0]], augment=True, gen=gen)
    labels = task.splits.train.y[steps[0].to(task.splits.train.y.device)]

    def model_only() -> None:
        for _ in steps:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=ws.autocast):
                logits = net(inputs)
            loss = F.cross_entropy(logits.float(), labels)
            tuner.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            tuner.optimizer.step()

    t_model, _ = timed(model_only, device)
    outside = max(0.0, t_epoch - t_model) / t_epoch
    direct = t_inputs / (t_inputs + t_model)  # robust when other jobs load the machine
    print(
        f"one FT epoch ({len(steps)} steps of {cfg.ft.batch_size}): {t_epoch:.2f} s; model "
        f"forward/backward/step alone {t_model:.2f} s; input pipeline alone {t_inputs:.3f} s; "
        f"share outside the model {outside:.1%} by difference, {direct:.1%} measured directly "
        f"(target <= 10%)"
    )
    numbers = {
        "features_s": t_feat,
        "hp_epoch_cached_s": t_hp_cached,
        "hp_epoch_frozen_s": t_hp_frozen,
        "hp_ratio": t_hp_frozen / t_hp_cached,
        "ft_epoch_s": t_epoch,
        "ft_model_only_s": t_model,
        "ft_inputs_only_s": t_inputs,
        "ft_share_outside_model": outside,
        "ft_share_inputs_direct": direct,
    }
    if skip_trial:
        return numbers

    net = fresh_net(seed=7)
    start = time.perf_counter()
    cached = (
        CachedOutputs(outputs.outputs, device) if isinstance(outputs, CachedOutputs) else outputs
    )
    hp = head_probe(net, cached, y_train, y_val, cfg.hp, 7, eval_bs, ws.autocast)
    result = Finetuner(
        net, task.splits.train, task.splits.val, task.pipeline, cfg.ft, 7, eval_bs, ws.autocast
    ).run()
    t_trial = time.perf_counter() - start
    test_acc = accuracy(net, task.splits.test, task.pipeline, eval_bs, ws.autocast)
    print(
        f"one trial, tau=4, {cfg.ft.epochs} FT epochs: HP val acc {hp.val.accuracy:.4f}, "
        f"energy {hp.train.energy:.3f}, FT val acc {result.val_acc_curve[-1]:.4f}, "
        f"test acc {test_acc:.4f}, {t_trial:.1f} s"
    )
    numbers.update(
        {
            "trial_tau4_val_acc": result.val_acc_curve[-1],
            "trial_tau4_test_acc": test_acc,
            "trial_s": t_trial,
        }
    )
    return numbers


if __name__ == "__main__":
    main()
