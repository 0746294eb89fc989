#!/usr/bin/env bash
# GPU checks of the distributed pieces (run on a CUDA machine from the repo root): resume from a
# checkpoint written from GPU tensors, workers=N devices=[...] workers_per_device=K pinning, and
# compose-style GPU slot claims (HPSEARCH_WORKERS_PER_DEVICE).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
set -x
nproc; nvidia-smi -L; python -c "import torch, optuna, sqlalchemy; print(torch.__version__, optuna.__version__, torch.cuda.is_available())"
python -c "import psycopg2" && echo HAVE_PSYCOPG2
ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null && echo HAVE_PG
mkdir -p $OUT
# 1. Resume exactness with CUDA tensors (checkpoint written from GPU, loaded into a GPU net).
HPSEARCH_TEST_DEVICE=cuda timeout 240 python -m pytest -q -x tests/study/test_distributed.py -k "resumed_trial_ends" 2>&1 | tail -5
# 2. Launcher with devices: 2 workers sharing GPU 0 (workers_per_device=2), SQLite default.
W=$(mktemp -d); cd $W
TINY="progress=false study.sampler=random data.train_per_class=40 data.val_per_class=20 data.test_per_class=20 data.synthetic.source_per_class=100 data.synthetic.source_epochs=3 ft.epochs=3 search_space={hp.epochs:{type:int,low:1,high:2}}"
timeout 240 python -m hpsearch $TINY workers=2 'devices=[0]' workers_per_device=2 study.n_trials=2 study.name=gpu 2>&1 | grep -E "device|exited|trial [0-9]+:" | cut -c1-220
# 3. GPU slots: with HPSEARCH_WORKERS_PER_DEVICE=2 on GPU 0 (CUDA_VISIBLE_DEVICES=0), two
#    replicas claim slots 0 and 1, a third one is refused (exit 2).
export CUDA_VISIBLE_DEVICES=0 HPSEARCH_WORKERS_PER_DEVICE=2
for r in 1 2; do
  (HPSEARCH_GPU_LOCK_DIR=$W/locks timeout 240 python -m hpsearch $TINY study.n_trials=30 study.name=claim$r > claim$r.log 2>&1; echo "claim$r rc=$?") &
  for i in $(seq 90); do [ -s $W/locks/gpu-0-$((r - 1)).lock ] && break; sleep 1; done
done
HPSEARCH_GPU_LOCK_DIR=$W/locks timeout 120 python -m hpsearch $TINY study.n_trials=1 study.name=claim3 2>&1 | tail -2; echo "claim3 rc=${PIPESTATUS[0]}"
wait
grep -hE "device|peak GPU memory" claim1.log claim2.log | cut -c1-220; cat $W/locks/gpu-0-*.lock
unset CUDA_VISIBLE_DEVICES HPSEARCH_WORKERS_PER_DEVICE
cd -
