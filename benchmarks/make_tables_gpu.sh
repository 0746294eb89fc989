#!/usr/bin/env bash
# Build four split-CIFAR tabular studies on one GPU machine (benchmarks/tables/README.md):
#   full        study full_table        5 target classes, 1,000 train images per class
#   lowdata3    study lowdata3_table    dog, horse, truck, 100 per class
#   lowdata25   study lowdata25_table   5 classes, 25 per class
#   lowdata300  study lowdata300_table  5 classes, 300 per class
# Each: random sampler, pruner=none, 8 FT epochs, search_space=resnet_pruning, validation 200 per
# class, the whole test split. The four searches run at once on GPU 0 for DEADLINE seconds, then
# get SIGTERM (the launcher forwards it; each worker fails and re-queues its running trial).
#
# The machine has no copy of the data or of the packages hpsearch needs besides torch, so the
# command runs from a snapshot of the code with a folder CARRY holding: whl/ (wheels of optuna,
# sqlalchemy, alembic, mako, colorlog, hydra-core, omegaconf, antlr4-python3-runtime),
# cifar10.tar.gz and weights.planes.pt (both made by benchmarks/tables_carry.py). On the device:
#   mkdir -p /tmp/src && tar -xzf .devcarry/code.tar.gz -C /tmp/src &&
#       CARRY=$PWD/.devcarry bash /tmp/src/benchmarks/make_tables_gpu.sh
# It writes to $OUT: the four .db files, logs.tar.gz (worker logs, GPU samples), timing.txt and
# log.txt (everything printed).
#
# SMOKE=1 rehearses the same steps on a CPU with tiny settings (a few images per class, 2 FT
# epochs, a 180 s deadline), so that a device run cannot fail on a path, an import or a key.
set -uo pipefail
: "${CARRY:?CARRY: the folder with whl/, cifar10.tar.gz and weights.planes.pt}"
: "${OUT:?OUT: the folder the results go to}"
SRC=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/tables}
WHEELS=${WHEELS:-$CARRY/whl}
SMOKE=${SMOKE:-0}
mkdir -p "$OUT" "$WORK/run"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
# 15 worker processes share 16 cores; each drives the GPU from one thread.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

if [ "$SMOKE" = 1 ]; then
    DEADLINE=${DEADLINE:-180}  # a loaded 2-core CPU needs a minute to start four launchers
    EPOCHS=2
    # name workers trials_per_worker train_per_class extra
    TABLES=(
        "full 2 50 8 data.val_per_class=4 data.test_per_class=4"
        "lowdata3 1 50 4 data.val_per_class=4 data.test_per_class=4 data.classes=[dog,horse,truck]"
        "lowdata25 1 50 2 data.val_per_class=4 data.test_per_class=4"
        "lowdata300 1 3 6 data.val_per_class=4 data.test_per_class=4"
    )
else
    DEADLINE=${DEADLINE:-300}
    EPOCHS=8
    # The full table is the slow one: it gets 8 workers and no trial cap; the low-data tables
    # stop at about 300 trials, so that their workers give the GPU back to it.
    TABLES=(
        "full 8 1000 1000"
        "lowdata3 2 150 100 data.classes=[dog,horse,truck]"
        "lowdata25 2 150 25"
        "lowdata300 3 100 300"
    )
fi

T0=$(date +%s)
echo "== setup (SMOKE=$SMOKE, DEADLINE=${DEADLINE}s, FT epochs $EPOCHS, source $SRC)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" "$WHEELS"/*.whl || exit 1
export PYTHONPATH="$WORK/site:$SRC${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH}"
tar -xzf "$CARRY/cifar10.tar.gz" -C "$WORK" || exit 1
python3 "$SRC/benchmarks/tables_carry.py" --unpack-weights \
    "$CARRY/weights.planes.pt" "$WORK/weights.pt" || exit 1
nvidia-smi -L || echo "no nvidia-smi"
python3 - <<'EOF' || exit 1
import sys, torch, torchvision, optuna, hydra, omegaconf, sqlalchemy, scipy, numpy
print("python", sys.version.split()[0], "| torch", torch.__version__, "| torchvision",
      torchvision.__version__, "| optuna", optuna.__version__, "| hydra", hydra.__version__,
      "| sqlalchemy", sqlalchemy.__version__, "| scipy", scipy.__version__)
print("cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
import hpsearch.app, hpsearch.study.launcher  # noqa: F401  the worker path imports
EOF
echo "setup took $(( $(date +%s) - T0 )) s"

GPU_PID=""
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 \
        > "$WORK/run/gpu.csv" 2>&1 &
    GPU_PID=$!
fi

echo "== searches: ${#TABLES[@]} tables at once, SIGTERM after ${DEADLINE}s"
T1=$(date +%s)
PIDS=()
for spec in "${TABLES[@]}"; do
    read -r name workers trials per_class extra <<<"$spec"
    dir="$WORK/run/$name"
    mkdir -p "$dir"
    # shellcheck disable=SC2086  # $extra holds several overrides
    (cd "$dir" && timeout -s TERM -k 90 "$DEADLINE" python3 -m hpsearch +experiment=split_cifar \
        data.root="$WORK/cifar10" backbone.weights="$WORK/weights.pt" \
        data.train_per_class="$per_class" $extra \
        search_space=resnet_pruning study.sampler=random pruner=none ft.epochs="$EPOCHS" \
        progress=false study.n_trials="$trials" study.name="${name}_table" \
        storage.url="sqlite:///$dir/$name.db" \
        workers="$workers" devices=[0] workers_per_device="$workers" \
        > "$dir/launcher.log" 2>&1
     echo "$name: launcher exit $? after $(( $(date +%s) - T1 )) s") &
    PIDS+=($!)
done
wait "${PIDS[@]}"
WALL=$(( $(date +%s) - T1 ))
[ -n "$GPU_PID" ] && kill "$GPU_PID" 2>/dev/null
echo "searches took $WALL s"
for spec in "${TABLES[@]}"; do
    read -r name _ <<<"$spec"
    echo "-- $name: last lines of launcher.log"
    tail -n 5 "$WORK/run/$name/launcher.log"
done

echo "== results"
python3 - "$WORK/run" "$OUT" "$DEADLINE" "$WALL" "${TABLES[@]}" <<'EOF' | tee "$OUT/timing.txt"
import sqlite3, statistics, sys
from pathlib import Path
import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
run, out, deadline, wall = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"search wall time {wall} s (deadline {deadline} s)")
for spec in sys.argv[5:]:
    name, workers = spec.split()[0], int(spec.split()[1])
    db = run / name / f"{name}.db"
    if not db.exists():
        print(f"{name}: no database")
        continue
    with sqlite3.connect(db) as src, sqlite3.connect(out / f"{name}.db") as dst:
        src.backup(dst)  # a consistent copy, WAL included
    try:
        study = optuna.load_study(
            study_name=f"{name}_table", storage=f"sqlite:///{out / name}.db"
        )
    except KeyError:
        print(f"{name}: no study in {db}")
        continue
    trials = study.get_trials(deepcopy=False)
    states = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    secs = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    vals = sorted(t.value for t in done)
    line = f"{name}: {len(done)} complete of {len(trials)} {states}; {workers} workers"
    if done:
        line += (
            f"; trial {statistics.median(secs):.1f} s median per worker, "
            f"{workers * wall / len(done):.2f} worker-s and {wall / len(done):.2f} s of the "
            f"shared GPU per complete trial; FT val acc best {vals[-1]:.3f} "
            f"median {statistics.median(vals):.3f} worst {vals[0]:.3f}"
        )
        phases = {
            k: statistics.median(t.user_attrs.get(k, 0.0) for t in done)
            for k in ("wall_features_s", "wall_hp_s", "wall_ft_s")
        }
        line += "; median " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
    print(line)
EOF
tar -czf "$OUT/logs.tar.gz" -C "$WORK/run" --exclude='*.db' --exclude='*.db-*' \
    --exclude=artifacts --exclude=cache . 2>/dev/null
ls -la "$OUT"
echo "total $(( $(date +%s) - T0 )) s"
