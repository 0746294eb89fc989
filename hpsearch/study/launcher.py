"""The local launcher: ``workers=N`` runs N workers of the same command on this machine.

    python -m hpsearch +experiment=cifar workers=4 devices=[0,1,2,3] study.n_trials=10

creates the study once (so a bad storage URL is one error, not N), then starts N processes of
the command without ``workers``/``devices``/``workers_per_device``, each with
``HPSEARCH_WORKER_INDEX=i`` (its sampler seed offset) and, with ``devices``,
``CUDA_VISIBLE_DEVICES`` set to one device: worker i gets ``devices[i % len(devices)]``, so the
workers spread evenly over the GPUs. ``workers_per_device=K`` lets up to K workers share each GPU
(several small trials fill one GPU; N <= K x len(devices), checked by the config):

    python -m hpsearch +experiment=split_cifar workers=8 devices=[0,1] workers_per_device=4

Each worker gets ``OMP_NUM_THREADS`` = cores / N (unless already set), so N processes do not
oversubscribe the CPU cores (each would otherwise start one thread per core). Each worker's
output goes to ``<storage.logs>/<study>/<time>/worker-<i>.log`` and, prefixed with
``[worker i]``, to this terminal. The launcher forwards SIGTERM/SIGINT/SIGHUP to the workers as
SIGTERM (each fails and re-queues its running trial, see ``hpsearch.study.shutdown``), waits for
all of them, and exits with the first non-zero exit code of a worker (0 when all succeeded). A
launcher that dies without forwarding (``kill -9``) still stops its workers the same way: each
gets SIGTERM from the kernel when its parent dies (``die_with_launcher``).

With ``study.confirm.auto=true`` the search workers run with ``auto`` off, and once all of them
have succeeded the launcher starts N workers of ``mode=confirm`` (``hpsearch.study.confirm``), which
share the confirmation trials. ``mode=confirm workers=N`` checks that there is something to
confirm before it starts any worker.

Workers on other machines are the same command without ``workers``: they share the study through
``storage=postgres`` and the checkpoints through a shared ``storage.artifacts``. Leave
``study.confirm.auto`` off there (each worker would confirm when it alone is done) and run
``mode=confirm`` once the search is over.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from omegaconf import DictConfig

from hpsearch.errors import ConfigError
from hpsearch.secrets import open_private, redact
from hpsearch.study.placement import WORKER_INDEX_ENV

if TYPE_CHECKING:
    from hpsearch.plan import StudyPlan

# Overrides the launcher consumes; the workers get the rest of the command line unchanged.
_LAUNCHER_KEYS = re.compile(r"^[+~]{0,2}(workers|devices|workers_per_device)(=|$)")
LAUNCHER_PID_ENV = "HPSEARCH_LAUNCHER_PID"  # set in each worker: the process it must die with
PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies (Linux)
PARENT_DEATH_SIGNAL = signal.SIGUSR1  # a worker's death signal, turned into one SIGTERM
# Signals the launcher passes on to its workers as SIGTERM: stop, Ctrl-C, the terminal closed.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PHASE_KEYS = re.compile(r"^[+~]{0,2}(mode|study\.confirm\.auto)(=|$)")


def worker_args(argv: list[str], phase: str | None = None) -> list[str]:
    """The command-line arguments of one worker: the launcher's, minus the launcher's keys; for a
    ``phase`` (search or confirm) of an auto-confirmed search, that mode with auto off."""
    args = [a for a in argv if not _LAUNCHER_KEYS.match(a)]
    if phase is None:
        return args
    return [a for a in args if not _PHASE_KEYS.match(a)] + [
        f"mode={phase}",
        "study.confirm.auto=false",
    ]


def worker_env(cfg: DictConfig, index: int, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env[WORKER_INDEX_ENV] = str(index)
    env[LAUNCHER_PID_ENV] = str(os.getpid())
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the log as they are written
    if cfg.devices:
        env["CUDA_VISIBLE_DEVICES"] = str(list(cfg.devices)[index % len(cfg.devices)])
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(cfg.workers)))
    return env


class _Worker:
    def __init__(
        self,
        index: int,
        cmd: list[str],
        env: dict[str, str],
        log_path: Path,
        out: IO[str],
        lock: threading.Lock,
    ) -> None:
        self.index, self.log_path = index, log_path
        # A session of its own: Ctrl-C in the terminal reaches only the launcher, which then
        # stops every worker exactly once.
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._thread = threading.Thread(target=self._pump, args=(out, lock), daemon=True)
        self._thread.start()

    def _pump(self, out: IO[str], lock: threading.Lock) -> None:
        """Each line of the worker to its log file and, prefixed, to ``out``. A log that cannot
        be written (a full disk) is given up with one line; the lines still reach ``out``, and
        the worker never blocks on a full pipe."""
        prefix = f"[worker {self.index}] "
        log_file: IO[str] | None = None
        try:
            log_file = open_private(self.log_path)  # a worker's log may name a storage
        except OSError as err:
            self._log_lost(out, lock, err)
        assert self.proc.stdout is not None
        for line in map(redact, self.proc.stdout):
            if log_file is not None:
                try:
                    log_file.write(line)
                    log_file.flush()
                except OSError as err:
                    self._log_lost(out, lock, err)
                    log_file = _close_quietly(log_file)
            with lock:
                out.write(prefix + line)
                out.flush()
        if log_file is not None:
            _close_quietly(log_file)

    def _log_lost(self, out: IO[str], lock: threading.Lock, err: OSError) -> None:
        with lock:
            out.write(
                f"[worker {self.index}] log {self.log_path} not written from here on "
                f"({err.strerror or err}); the output goes on here\n"
            )
            out.flush()

    def wait(self) -> int:
        code = self.proc.wait()
        self._thread.join()
        return code


def launch_workers(
    cfg: DictConfig, plan: StudyPlan, argv: list[str], out: IO[str] = sys.stdout
) -> int:
    """Create the study (search) or check that it has something to confirm (confirm), run
    ``cfg.workers`` worker processes of ``argv``, wait; an exit code. An auto-confirmed search
    is two rounds: the search workers, then the confirm workers."""
    from hpsearch.study.setup import appending_note, prepare_study

    check_devices(cfg)
    if cfg.mode == "confirm":
        from hpsearch.study.confirm import plan_confirmation
        from hpsearch.study.storage import load_existing_study

        plan_confirmation(load_existing_study(str(cfg.storage.url), str(cfg.study.name)), cfg, plan)
        return _run_round(cfg, worker_args(argv), out)
    study = prepare_study(cfg, plan.enqueued)
    if int(cfg.study.n_trials) > 0 and (note := appending_note(study, str(cfg.storage.url))):
        print(note, file=out, flush=True)
    if not cfg.study.confirm.auto:
        return _run_round(cfg, worker_args(argv), out)
    code = _run_round(cfg, worker_args(argv, "search"), out)
    if code != 0:
        return code
    return _run_round(cfg, worker_args(argv, "confirm"), out)


def _close_quietly(handle: IO[str]) -> None:
    try:
        handle.close()
    except OSError:  # the last flush of a full disk
        pass


def check_devices(cfg: DictConfig, visible: int | None = None) -> None:
    """Every numeric id in ``devices`` names a CUDA device of this machine (``visible``: how
    many there are; default torch's count), so that a worker never falls back to the CPU
    without a word. Other ids (GPU UUIDs) are left to CUDA."""
    if not cfg.devices:
        return
    if visible is None:
        import torch

        visible = torch.cuda.device_count()
    wrong = [str(d) for d in cfg.devices if str(d).isdigit() and int(d) >= visible]
    if wrong:
        have = f"ids 0-{visible - 1}" if visible else "none"
        raise ConfigError(
            f"devices={list(map(str, cfg.devices))} is invalid: this machine has {visible} CUDA "
            f"devices ({have}); {', '.join(wrong)} is not one of them (leave devices out to "
            "run on the CPU)"
        )


def _run_round(cfg: DictConfig, args: list[str], out: IO[str]) -> int:
    """Run ``cfg.workers`` workers of ``python -m hpsearch ARGS``, wait; an exit code."""
    n = int(cfg.workers)
    mode = next(
        (a.split("=", 1)[1] for a in reversed(args) if a.startswith("mode=")), str(cfg.mode)
    )
    log_dir = (
        Path(str(cfg.storage.logs))
        / _safe_name(str(cfg.study.name))
        / (time.strftime("%Y-%m-%d_%H-%M-%S") + ("" if mode == "search" else f"-{mode}"))
    )
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # each worker's pump says its log is not written
        print(f"logs: cannot create {log_dir} ({err.strerror})", file=out, flush=True)
    lock = threading.Lock()
    workers: list[_Worker] = []

    def forward(signum: int, _frame: Any) -> None:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        print(
            f"starting {n} {mode} workers of study {cfg.study.name!r}; logs in {log_dir}",
            file=out,
            flush=True,
        )
        for i in range(n):
            cmd = [sys.executable, "-m", "hpsearch", *args, f"hydra.run.dir={log_dir}/worker-{i}"]
            workers.append(
                _Worker(i, cmd, worker_env(cfg, i), log_dir / f"worker-{i}.log", out, lock)
            )
        # A worker killed by signal N reads -N here; report it as the shell would (128 + N).
        codes = [code if code >= 0 else 128 - code for code in (w.wait() for w in workers)]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for w, code in zip(workers, codes):
        print(f"worker {w.index} exited with code {code} (log: {w.log_path})", file=out, flush=True)
    return next((c for c in codes if c != 0), 0)


def die_with_launcher(env: dict[str, str] | None = None) -> None:
    """In a worker of the local launcher: stop (SIGTERM, the graceful way) when the launcher
    dies, however it dies (``kill -9`` included), instead of running on as an orphan whose output
    goes nowhere. A launcher already gone by now means the same, at once. Elsewhere (no
    ``HPSEARCH_LAUNCHER_PID``, not Linux) nothing happens.

    The kernel signals a child each time it is reparented, and a launcher's children are
    reparented once per thread of the dying launcher (its output threads, then init): the death
    signal is ``PARENT_DEATH_SIGNAL``, whose handler turns the first one into one SIGTERM and
    ignores the rest (a second SIGTERM would end the worker before it re-queued its trial)."""
    value = (os.environ if env is None else env).get(LAUNCHER_PID_ENV, "")
    if not value.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes

    def launcher_died(_signum: int, _frame: Any) -> None:
        signal.signal(PARENT_DEATH_SIGNAL, signal.SIG_IGN)
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        signal.signal(PARENT_DEATH_SIGNAL, launcher_died)
        libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
    except (OSError, AttributeError, ValueError):  # ValueError: not the main thread
        return
    if os.getppid() != int(value):  # the launcher died before the prctl
        launcher_died(int(PARENT_DEATH_SIGNAL), None)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "study"
