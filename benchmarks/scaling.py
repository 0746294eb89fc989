"""How many workers a study scales to, and what storage + sampler cost per trial.

    python benchmarks/scaling.py                      # PostgreSQL on 127.0.0.1 and SQLite
    python benchmarks/scaling.py --trial-s 2 --workers 1 2 4 8 --overhead-trials 1000

1. Scaling: trials of a fixed, known cost (``time.sleep(trial_s)`` after the sampler suggested
   the toy search space's parameters) run by 1, 2, 4, 8 worker processes on one study, set up and
   run exactly as ``python -m hpsearch`` workers do (``prepare_study``: heartbeat, retry callback,
   setup lock, TPE with per-worker seeds). Throughput = trials / (last completion - first start),
   from the study's own timestamps, so process start-up does not count; the ratio is against 1
   worker on the same storage. Overhead per trial = the time a worker spends per trial beyond
   ``trial_s``.
2. Overhead at 1,000 trials: the study is filled with ~900 finished trials (added in bulk), then
   one worker runs zero-cost trials, first with the random sampler (~= storage alone), then
   with TPE (TPE - random ~= the sampler, with ~1,000 trials of history). Wall time per trial
   and this process's CPU time per trial (the difference is waiting: database round trips,
   fsync, and CPU contention on a shared machine).

The study setups are the product's (``hpsearch.study.setup.prepare_study``); PostgreSQL gets a fresh
database per run, dropped afterwards; SQLite a fresh file. ``--journal`` adds Optuna's journal
file storage (no heartbeat, so no retries) for comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def compose(url: str, study: str, sampler: str) -> Any:
    from omegaconf import OmegaConf

    from hpsearch.app import compose_config

    cfg = compose_config(
        [
            f"study.name={study}",
            f"study.sampler={sampler}",
            "progress=false",
            f"storage.url={url}"
            if not url.startswith("journal:")
            else "storage.url=sqlite:///unused.db",
        ]
    )
    OmegaConf.set_struct(cfg, False)
    cfg.storage.url = url
    return OmegaConf.to_container(cfg, resolve=True)


def open_study(cfg_dict: dict, worker: int) -> Any:
    """The study as a worker opens it (prepare_study), or a journal file study."""
    import optuna
    from omegaconf import OmegaConf

    from hpsearch.study.pruning import make_pruner
    from hpsearch.study.setup import make_sampler, prepare_study

    os.environ["HPSEARCH_WORKER_INDEX"] = str(worker)
    cfg = OmegaConf.create(cfg_dict)
    url = str(cfg.storage.url)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        storage = JournalStorage(JournalFileBackend(url[len("journal:") :]))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.create_study(
            storage=storage,
            study_name=str(cfg.study.name),
            direction="maximize",
            load_if_exists=True,
            sampler=make_sampler(cfg.study, worker),
            pruner=make_pruner(cfg),
        )
    return prepare_study(cfg, [])


def make_objective(cfg_dict: dict, trial_s: float):
    from omegaconf import OmegaConf

    from hpsearch.space import parse_search_space, suggest

    cfg = OmegaConf.create(cfg_dict)
    distributions = parse_search_space(cfg.search_space, cfg)

    def objective(trial) -> float:
        params = suggest(trial, distributions)
        if trial_s > 0:
            time.sleep(trial_s)
        # A smooth function of the parameters, so that TPE has something to model.
        return -abs(math.log(params["hp.lr"]) - math.log(0.05)) - params["hp.label_smoothing"]

    return objective


def _worker(cfg_dict: dict, index: int, n_trials: int, trial_s: float, barrier: Any) -> None:
    study = open_study(cfg_dict, index)
    objective = make_objective(cfg_dict, trial_s)
    # One zero-cost trial first, so that one-time costs of a new process (SQL compilation, lazy
    # imports in the sampler) are paid before the clock starts, as in a long-running worker.
    study.optimize(lambda t: (t.set_user_attr("warmup", True), objective_value(t))[1], n_trials=1)
    barrier.wait()
    study.optimize(objective, n_trials=n_trials)


def objective_value(trial: Any) -> float:
    return -float(trial.number)


def study_window(cfg_dict: dict) -> tuple[int, float, int]:
    """(complete trials, seconds from the first start to the last completion, failed trials)."""
    import optuna

    study = open_study(cfg_dict, 0)
    trials = study.get_trials(deepcopy=False)
    done = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and not t.user_attrs.get("warmup")
    ]
    window = (
        max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    ).total_seconds()
    failed = sum(t.state == optuna.trial.TrialState.FAIL for t in trials)
    return len(done), window, failed


def run_scaling(url: str, workers: int, per_worker: int, trial_s: float) -> dict[str, Any]:
    cfg_dict = compose(url, f"scaling-{workers}", "tpe")
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=_worker, args=(cfg_dict, i, per_worker, trial_s, barrier))
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    codes = [p.exitcode for p in procs]
    n, window, failed = study_window(cfg_dict)
    per_trial = window * workers / n  # worker-seconds per trial
    return {
        "workers": workers,
        "trials": n,
        "failed": failed,
        "exit_codes": codes,
        "window_s": round(window, 3),
        "throughput_per_s": round(n / window, 4),
        "overhead_ms_per_trial": round((per_trial - trial_s) * 1000, 1),
    }


def run_overhead(url: str, n_trials: int, measured: int) -> list[dict[str, Any]]:
    """Per-trial cost of zero-cost trials once the study holds ~n_trials trials: the study is
    filled with n_trials - 2*measured finished trials (sampled at random, added in bulk), then
    ``measured`` trials run with the random sampler and ``measured`` with TPE."""
    import optuna

    cfg_dict = compose(url, "overhead", "random")
    study = open_study(cfg_dict, 0)
    objective = make_objective(cfg_dict, 0.0)
    scratch = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    scratch.optimize(objective, n_trials=max(0, n_trials - 2 * measured))
    start = time.perf_counter()
    study.add_trials(scratch.trials)
    fill_s = time.perf_counter() - start
    rows = []
    for sampler in (
        optuna.samplers.RandomSampler(seed=1),
        optuna.samplers.TPESampler(seed=1, n_startup_trials=8),
    ):
        study.sampler = sampler
        stamps = [time.perf_counter()]
        cpu = time.process_time()
        study.optimize(
            objective,
            n_trials=measured,
            callbacks=[lambda s, t, stamps=stamps: stamps.append(time.perf_counter())],
        )
        cpu = time.process_time() - cpu
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        rows.append(
            {
                "sampler": type(sampler).__name__,
                "trials_before": len(study.trials) - measured,
                "measured": len(gaps),
                "mean_ms": round(1000 * statistics.mean(gaps), 1),
                "median_ms": round(1000 * statistics.median(gaps), 1),
                "client_cpu_ms": round(1000 * cpu / len(gaps), 1),
                "bulk_fill_ms_per_trial": round(1000 * fill_s / max(1, len(scratch.trials)), 1),
            }
        )
    return rows


class Databases:
    """Fresh PostgreSQL databases, dropped on exit."""

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy import create_engine

        self.admin_url = admin_url
        self.engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.names: list[str] = []

    def new(self) -> str:
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        name = f"hpsearch_bench_{uuid.uuid4().hex[:10]}"
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            for name in self.names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--trial-s", type=float, default=2.0, help="cost of one trial (s)")
    parser.add_argument("--per-worker", type=int, default=3, help="trials per worker")
    parser.add_argument(
        "--overhead-trials",
        type=int,
        default=1000,
        help="study size at which the per-trial overhead is measured",
    )
    parser.add_argument(
        "--measured", type=int, default=50, help="trials timed per sampler at that size"
    )
    parser.add_argument(
        "--storages",
        nargs="+",
        default=["postgres", "sqlite"],
        choices=["postgres", "sqlite", "journal"],
    )
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="hpsearch-bench-"))
    dbs = Databases(args.pg_admin_url) if "postgres" in args.storages else None
    counter = iter(range(10**6))

    def url_for(kind: str) -> str:
        if kind == "postgres":
            assert dbs is not None
            return dbs.new()
        if kind == "sqlite":
            return f"sqlite:///{tmp / f'bench{next(counter)}.db'}"
        return f"journal:{tmp / f'bench{next(counter)}.log'}"

    results: dict[str, Any] = {
        "trial_s": args.trial_s,
        "per_worker": args.per_worker,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "scaling": {},
        "overhead": {},
    }
    try:
        for kind in args.storages:
            rows = []
            for w in args.workers:
                row = run_scaling(url_for(kind), w, args.per_worker, args.trial_s)
                base = rows[0]["throughput_per_s"] if rows else row["throughput_per_s"]
                row["speedup_vs_1"] = round(row["throughput_per_s"] / base, 2)
                rows.append(row)
                print(
                    f"{kind:8s} workers={w}: {row['trials']} trials in {row['window_s']:.2f}s"
                    f" -> {row['throughput_per_s']:.3f}/s, x{row['speedup_vs_1']:.2f} vs 1, "
                    f"overhead {row['overhead_ms_per_trial']:.0f} ms/trial, "
                    f"failed {row['failed']}",
                    flush=True,
                )
            results["scaling"][kind] = rows
        for kind in args.storages:
            rows = run_overhead(url_for(kind), args.overhead_trials, args.measured)
            results["overhead"][kind] = rows
            for row in rows:
                print(
                    f"{kind:8s} {row['sampler']:13s}: zero-cost trials after "
                    f"{row['trials_before']}: mean {row['mean_ms']:.1f} ms/trial, median "
                    f"{row['median_ms']:.1f} ms, client CPU {row['client_cpu_ms']:.1f} ms",
                    flush=True,
                )
        results["loadavg_end"] = os.getloadavg()
    finally:
        if dbs is not None:
            dbs.drop_all()
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
