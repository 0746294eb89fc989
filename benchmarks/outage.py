"""How fast a worker's storage recovers from a PostgreSQL outage, and whether a write is lost.

On a private PostgreSQL server (initdb + pg_ctl on a free port, as the tests do), a trial thread
writes through ``ResilientStorage`` without pause (``report`` + ``set_user_attr`` per step) while
a heartbeat thread beats every second, as in a worker. Each repetition disrupts the server once:

    restart   pg_ctl restart -m fast (open sessions are terminated mid-transaction)
    stop-5    pg_ctl stop -m fast, 5 s down, pg_ctl start
    stop-20   the same with 20 s down

and measures the recovery: from the moment the server accepts connections again (``pg_ctl -w``
returned) to the trial thread's next successful write. After each repetition every step must be
in the database (lost writes: the steps missing). Prints per kind the mean recovery with a 95%
interval over the repetitions, min and max, and the writes lost.

    python benchmarks/outage.py [--repeats 5] [--kinds restart stop-5 stop-20]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "study"))

from pgcluster import PgCluster  # noqa: E402

from hpsearch.study.outage import ResilientStorage  # noqa: E402
from hpsearch.study.storage import Heartbeat, Pool, open_storage  # noqa: E402

T_95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


def one_run(cluster: PgCluster, kind: str) -> tuple[float, int, float]:
    """(recovery s, writes lost, outage s as the storage saw it) of one disruption."""
    url = cluster.create_database()
    rdb = open_storage(url, Heartbeat(1, 60, 3), Pool())
    storage = ResilientStorage(rdb, 120, url)
    study = optuna.create_study(storage=storage, direction="maximize")
    trial = study.ask()
    written: list[tuple[float, int]] = []  # (monotonic time, step) of each finished write
    stop = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        step = 0
        try:
            while not stop.is_set():
                step += 1
                trial.report(float(step), step=step)
                trial.set_user_attr("step", step)
                written.append((time.monotonic(), step))
        except BaseException as err:  # noqa: BLE001  (reported below)
            errors.append(err)

    def beat() -> None:
        while not stop.wait(1.0):
            storage.record_heartbeat(trial._trial_id)

    threads = [threading.Thread(target=work), threading.Thread(target=beat)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    down_at = time.monotonic()
    if kind == "restart":
        cluster.restart()
    else:
        cluster.stop()
        time.sleep(float(kind.split("-")[1]))
        cluster.start()
    up_at = time.monotonic()
    while not any(t > up_at for t, _ in written) and not errors:
        time.sleep(0.01)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    recovery = min(t for t, _ in written if t > up_at) - up_at
    stored = rdb.get_trial(trial._trial_id)
    last = written[-1][1]
    lost = last - len([s for s in stored.intermediate_values if s <= last])
    lost += int(stored.user_attrs.get("step", 0) < last)
    rdb.engine.dispose()
    return recovery, lost, up_at - down_at


def interval(xs: list[float]) -> str:
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return f"{mean:.2f}"
    half = T_95.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / len(xs) ** 0.5
    return f"{mean:.2f} ± {half:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", default=["restart", "stop-5", "stop-20"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", "Heartbeat of storage")  # no optimize loop here
    cluster = PgCluster()
    cluster.start()
    try:
        print(
            "| disruption | server down (s) | recovery after the server is back (s, mean ± 95%) "
            "| min | max | writes lost |"
        )
        print("|---|---|---|---|---|---|")
        for kind in args.kinds:
            runs = [one_run(cluster, kind) for _ in range(args.repeats)]
            rec = [r for r, _, _ in runs]
            print(
                f"| {kind} | {statistics.fmean(d for _, _, d in runs):.1f} | {interval(rec)} "
                f"| {min(rec):.2f} | {max(rec):.2f} | {sum(n for _, n, _ in runs)} |",
                flush=True,
            )
    finally:
        cluster.remove()


if __name__ == "__main__":
    main()
