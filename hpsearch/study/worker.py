"""A search worker: validate everything, open the shared study, run trials, print the best.

Every worker of a study runs this same code, on one machine (``workers=N``) or many
(``storage=postgres``): it pulls trials from the shared study until it has run ``study.n_trials``
of them. A trial whose worker died is failed and re-queued by the next worker (heartbeat); a
stopped worker fails and re-queues its trial itself (``hpsearch.study.shutdown``); either way the
retry resumes from the trial's newest checkpoint (``hpsearch.trial.checkpoints``). A storage
outage is ridden out for up to ``storage.outage_timeout`` (``hpsearch.study.outage``,
``hpsearch.study.loop``); past it the worker ends with exit code 3.
"""
from __future__ import annotations

import logging

import optuna
import torch
from omegaconf import DictConfig

from hpsearch.pruners import InvalidSignalError
from hpsearch.schedules import enqueue_baselines, study_distributions
from hpsearch.study.bound import record_bound_estimate
from hpsearch.study.loop import run_trials
from hpsearch.study.placement import pin_to_free_gpu
from hpsearch.study.progress import best_trials_table, trial_line
from hpsearch.study.setup import check_enqueue, prepare_study
from hpsearch.study.shutdown import (GracefulShutdown, WorkerStopped, exit_stopped,
                                     requeue_stopped_trial)
from hpsearch.study.storage import Heartbeat, safe_url
from hpsearch.trial import Objective, Workspace
from hpsearch.trial.checkpoints import CheckpointStore

log = logging.getLogger("hpsearch")


def run_search(cfg: DictConfig) -> optuna.Study:
    """Run ``study.n_trials`` trials of the configured study in this process (0: only create
    the study and enqueue its fixed trials).

    ``cfg`` is a checked config (``hpsearch.app.compose_config``: schema, search space, fixed
    trials, baselines, storage URL). The dataset and the backbone weights are loaded before the
    study is created or touched, so bad paths fail first.
    """
    distributions = study_distributions(cfg)  # the search space less the schedule's keys
    fixed = check_enqueue(cfg, distributions)
    checkpoints = CheckpointStore.at(str(cfg.storage.artifacts))
    cfg = pin_to_free_gpu(cfg)  # compose replicas: a GPU slot each
    workspace = Workspace(cfg)
    task = workspace.task(cfg)  # decodes data and loads weights now, so bad paths fail here
    log.info("data: %d train / %d val / %d test, classes %s; backbone %s (%s); device %s",
             len(task.splits.train), len(task.splits.val), len(task.splits.test),
             task.splits.classes, cfg.backbone.arch, task.pretrained.description,
             workspace.device)

    study = prepare_study(
        cfg, fixed, setup=lambda study: enqueue_baselines(study, cfg, distributions))
    n_trials = int(cfg.study.n_trials)
    if n_trials == 0:
        log.info("study %r is ready in %s (%d trials so far)", study.study_name,
                 safe_url(str(cfg.storage.url)), len(study.get_trials(deepcopy=False)))
        return study

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.info(trial_line(study, trial))

    objective = Objective(cfg, distributions, workspace, checkpoints)
    retry = Heartbeat.from_config(cfg.storage).retry_callback()
    with GracefulShutdown() as shutdown:
        try:
            run_trials(study, shutdown.objective(objective), n_trials,
                       callbacks=[record_bound_estimate, report, checkpoints.on_trial_finished,
                                  shutdown.callback],
                       catch=(InvalidSignalError,),  # NaN HP signals fail that trial only
                       retry=retry)
        except WorkerStopped as err:
            failed = requeue_stopped_trial(study, shutdown.current_trial_id, retry)
            if failed is not None:
                log.warning("%s: trial %d marked FAIL and re-queued; it resumes from its last "
                            "checkpoint", err, failed.number)
            exit_stopped(err)
    if shutdown.stopping:
        log.warning("stopped by signal %s between trials", shutdown.signum)
        exit_stopped(WorkerStopped(shutdown.signum))  # type: ignore[arg-type]
    if workspace.device.type == "cuda":  # what a GPU slot needs: workers_per_device sizing
        log.info("peak GPU memory of this worker: %.0f MiB (torch.cuda.max_memory_allocated)",
                 torch.cuda.max_memory_allocated(workspace.device) / 2**20)
    log.info("best trials of study %r:\n%s", study.study_name,
             best_trials_table(study, int(cfg.study.top_k)))
    log.info("storage: %s", safe_url(str(cfg.storage.url)))
    return study
