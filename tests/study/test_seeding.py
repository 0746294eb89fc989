"""A rerun of the same command samples new configurations; each trial records its sampler seed."""

from __future__ import annotations

import optuna
from conftest import run_cli

from hpsearch.study.seeding import SAMPLER_SEED, run_seed

TINY = [
    "progress=false",
    "device=cpu",
    "study.sampler=random",
    "data.train_per_class=20",
    "data.val_per_class=10",
    "data.test_per_class=10",
    "data.synthetic.source_per_class=50",
    "data.synthetic.source_epochs=2",
    "hp.epochs=1",
    "ft.epochs=1",
    "study.n_trials=2",
]


def test_run_seed_is_the_old_offset_on_a_fresh_study_and_new_on_a_rerun():
    assert run_seed(7, 0, 0) == 7 and run_seed(7, 3, 0) == 10
    reruns = {run_seed(7, w, n) for w in range(4) for n in (2, 4, 6, 8)}
    assert len(reruns) == 16 and not reruns & {7, 8, 9, 10}


def test_rerunning_the_same_command_adds_new_configurations(workdir):
    """Twice the same single-worker command on one SQLite study: the second run's random phase
    draws other parameters than the first's (before: the same two points again)."""
    for _ in range(2):
        proc = run_cli(TINY, workdir)
        assert proc.returncode == 0, proc.stderr[-2000:]
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{workdir}/storage/hpsearch.db")
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4
    points = {tuple(sorted(t.params.items())) for t in trials}
    assert len(points) == 4, [t.params for t in trials]
    seeds = [t.user_attrs[SAMPLER_SEED] for t in trials]
    assert seeds[:2] == [0, 0]  # study.seed 0, worker 0, fresh study
    assert seeds[2:] == [run_seed(0, 0, 2)] * 2
