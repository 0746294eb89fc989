"""Sampler, pruner and study setup, and the table of best trials.

Storage is any SQLAlchemy URL (``storage.url``); the default is a SQLite file under ``storage/``.
Reaching it is checked before any work starts (``check_connection``): an unreachable server, a
wrong password or an unknown database becomes one line that names the URL with its password
hidden. Past that check a lost connection is an outage: setup is repeated until the storage is
back (at most ``storage.outage_timeout``), and the study's storage rides out later outages
(``hpsearch.study.outage``).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from hpsearch.errors import DiskFull, HpsearchError, is_disk_full
from hpsearch.plan import StudyPlan
from hpsearch.record import BASELINE, SCHEDULE, TrialRecord
from hpsearch.secrets import redact_tree
from hpsearch.study.outage import (
    ResilientStorage,
    connection_error_reason,
    is_connection_error,
    ride_out,
)
from hpsearch.study.placement import WORKER_INDEX_ENV, worker_index
from hpsearch.study.pruning import make_pruner
from hpsearch.study.seeding import SeedRecordingSampler, run_seed, trials_run
from hpsearch.study.storage import (
    Heartbeat,
    Pool,
    connect_storage,
    describe_error,
    safe_url,
    setup_lock,
)

log = logging.getLogger(__name__)

METRIC_NAMES = ["ft_val_acc"]  # the objective, as the dashboard's plots label it


def make_sampler(study_cfg: DictConfig, worker_offset: int = 0) -> optuna.samplers.BaseSampler:
    seed = int(study_cfg.seed) + worker_offset
    if study_cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(study_cfg.n_startup_trials))


def run_sampler(
    study: optuna.Study, study_cfg: DictConfig, worker: int
) -> optuna.samplers.BaseSampler:
    """This worker's sampler for this run (``hpsearch.study.seeding``): seeded from the study
    seed, the worker and the trials run so far, recording its seed in every trial it starts."""
    seed = run_seed(int(study_cfg.seed), worker, trials_run(study))
    return SeedRecordingSampler(make_sampler(study_cfg, seed - int(study_cfg.seed)), seed)


def create_study(
    cfg: DictConfig,
    storage: optuna.storages.BaseStorage,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    study = optuna.create_study(
        storage=storage,
        study_name=str(cfg.study.name),
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if "config" in study.user_attrs:
        check_same_space(study, cfg)
    else:
        config = OmegaConf.to_container(cfg, resolve=True)
        config["storage"]["url"] = safe_url(str(cfg.storage.url))  # never store the password
        config = redact_tree(config)  # nor one in any other key (pruner.prior_storage)
        study.set_user_attr("config", config)
    if study.metric_names != METRIC_NAMES:  # without it the plots say "Objective 0"
        with warnings.catch_warnings():  # experimental since optuna 3.2, unchanged in 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(METRIC_NAMES)
    return study


def check_same_space(study: optuna.Study, cfg: DictConfig) -> None:
    """A study searches one space: a run whose ``search_space`` (after pinning and the
    schedule) differs from the one the study was created with is refused, naming the keys."""
    was = study.user_attrs["config"].get("search_space") or {}
    now = OmegaConf.to_container(cfg.search_space, resolve=True) or {}
    if was == now:
        return
    diff = [
        f"{k}: {'searched' if k in was else 'not searched'} in the study, "
        f"{'searched' if k in now else 'not searched (pinned or left out)'} here"
        if (k in was) != (k in now)
        else f"{k}: {was[k]} in the study, {now[k]} here"
        for k in sorted(set(was) | set(now))
        if was.get(k) != now.get(k)
    ]
    raise HpsearchError(
        f"study {study.study_name!r} was created with another search space ({'; '.join(diff)}); "
        "run it with the overrides it was created with, or name a new study with study.name=..."
    )


def prepare_study(
    cfg: DictConfig, fixed: list[dict[str, Any]], setup: Callable[[optuna.Study], Any] | None = None
) -> optuna.Study:
    """Open the storage (heartbeat on), create or load the study, enqueue the fixed trials and
    run ``setup(study)`` (the baselines), holding the storage's setup lock so that any number of
    workers may do it at the same moment (a fixed trial is enqueued once, however many workers
    start together). The study's storage is a :class:`ResilientStorage`; a connection lost
    during setup repeats it (each step loads what exists)."""
    url = str(cfg.storage.url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return ride_out(
        "study setup",
        lambda: _prepare(cfg, fixed, setup),
        float(cfg.storage.outage_timeout),
        safe_url(url),
    )


def _prepare(
    cfg: DictConfig, fixed: list[dict[str, Any]], setup: Callable[[optuna.Study], Any] | None
) -> optuna.Study:
    url = str(cfg.storage.url)
    with setup_lock(url):
        try:
            rdb = connect_storage(
                url, Heartbeat.from_config(cfg.storage), Pool.from_config(cfg.storage)
            )
        except Exception as err:
            if is_disk_full(err):
                raise DiskFull(
                    f"storage {safe_url(url)}: cannot set up the study, its disk is full "
                    f"({connection_error_reason(err)}); free space and run the command again"
                ) from None
            if is_connection_error(err):
                raise  # an outage: ride_out waits for the storage and repeats
            raise HpsearchError(describe_error(url, err)) from None
        storage = ResilientStorage(rdb, float(cfg.storage.outage_timeout), safe_url(url))
        study = create_study(
            cfg, storage, make_sampler(cfg.study, worker_index(url)), make_pruner(cfg)
        )
        study.sampler = run_sampler(study, cfg.study, worker_index(url))
        for params in fixed:
            study.enqueue_trial(params, skip_if_exists=True)
        if setup is not None:
            setup(study)
    return study


FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def appending_note(study: optuna.Study, url: str) -> str | None:
    """One line when a search adds its trials to a study that already has finished ones (a
    rerun of the same command), else None; None too in a worker the launcher or compose started
    (``HPSEARCH_WORKER_INDEX`` set), whose launcher says it once."""
    if os.environ.get(WORKER_INDEX_ENV, "").strip():
        return None
    n = len(study.get_trials(deepcopy=False, states=FINISHED))
    if n == 0:
        return None
    trials = f"{n} finished trial" + ("s" if n != 1 else "")
    return (
        f"study {study.study_name!r} in {safe_url(url)} already has {trials}: this run adds "
        "its trials to them (study.name=NAME starts a new study)"
    )


def enqueue_baselines(study: optuna.Study, plan: StudyPlan) -> list[str]:
    """Enqueue each of the plan's baselines not yet in the study; return the names enqueued.

    A baseline counts as present when a trial carries its name with ``baseline=true`` and did not
    fail (two workers starting at the same instant may both enqueue it, as with enqueue_trial).
    """
    present = set()
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.of(t)
        if record.baseline and t.state != optuna.trial.TrialState.FAIL:
            present.add(record.schedule)
    enqueued = []
    for arm in plan.baselines:
        if arm.name in present:
            continue
        study.enqueue_trial(arm.params, user_attrs={SCHEDULE: arm.name, BASELINE: True})
        enqueued.append(arm.name)
    return enqueued
