"""A worker: open the shared study, run trials, print the best (a search)
or the answer (a confirmation, ``hpsearch.study.confirm``).

Every worker of a study runs this same code, on one machine (``workers=N``) or many
(``storage=postgres``): it pulls trials from the shared study until it has run ``study.n_trials``
of them. A trial whose worker died is failed and re-queued by the next worker (heartbeat); a
stopped worker fails and re-queues its trial itself (``hpsearch.study.shutdown``); either way the
retry resumes from the trial's newest checkpoint (``hpsearch.trial.checkpoints``). A storage
outage is ridden out for up to ``storage.outage_timeout`` (``hpsearch.study.outage``,
``hpsearch.study.loop``); past it the worker ends with exit code 3.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import optuna
import torch
from omegaconf import DictConfig

from hpsearch.errors import HpsearchError
from hpsearch.plan import StudyPlan, plan_study
from hpsearch.pruners import InvalidSignalError
from hpsearch.study.answer import arm_lines, record_answer
from hpsearch.study.bound import record_bound_estimate
from hpsearch.study.confirm import enqueue_confirmation, plan_confirmation, waiting_confirmations
from hpsearch.study.loop import run_trials
from hpsearch.study.placement import pin_to_free_gpu
from hpsearch.study.progress import best_trials_table, trial_line
from hpsearch.study.setup import appending_note, enqueue_baselines, prepare_study
from hpsearch.study.shutdown import (
    GracefulShutdown,
    WorkerStopped,
    exit_stopped,
    requeue_stopped_trial,
)
from hpsearch.study.storage import Heartbeat, load_existing_study, safe_url, setup_lock
from hpsearch.trial import Objective, Workspace
from hpsearch.trial.checkpoints import CheckpointStore

log = logging.getLogger("hpsearch")


def _open_worker(cfg: DictConfig) -> tuple[DictConfig, Workspace, CheckpointStore]:
    """Decode the data and load the weights (bad paths fail here); the worker's config (a GPU
    of its own for compose replicas), workspace and checkpoint store."""
    checkpoints = CheckpointStore.at(str(cfg.storage.artifacts))
    cfg = pin_to_free_gpu(cfg)  # compose replicas: a GPU slot each
    workspace = Workspace(cfg)
    task = workspace.task(cfg)
    log.info(
        "data: %d train / %d val / %d test, classes %s; backbone %s (%s); device %s",
        len(task.splits.train),
        len(task.splits.val),
        len(task.splits.test),
        task.splits.classes,
        cfg.backbone.arch,
        task.pretrained.description,
        workspace.device,
    )
    return cfg, workspace, checkpoints


def _run_trials(
    study: optuna.Study,
    cfg: DictConfig,
    objective: Callable[[optuna.Trial], float],
    checkpoints: CheckpointStore,
    n_trials: int,
    *extra_callbacks: Callable,
) -> None:
    """``n_trials`` trials with the worker's callbacks, riding out storage outages
    (``hpsearch.study.loop``); a stop signal re-queues the running trial and ends the process."""

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.info(trial_line(study, trial))

    retry = Heartbeat.from_config(cfg.storage).retry_callback()
    with GracefulShutdown() as shutdown:
        try:
            run_trials(
                study,
                shutdown.objective(objective),
                n_trials,
                callbacks=[
                    record_bound_estimate,
                    report,
                    checkpoints.on_trial_finished,
                    *extra_callbacks,
                    shutdown.callback,
                ],
                catch=(InvalidSignalError,),  # NaN HP signals fail that trial only
                retry=retry,
            )
        except WorkerStopped as err:
            failed = requeue_stopped_trial(study, shutdown.current_trial_id, retry)
            if failed is not None:
                log.warning(
                    "%s: trial %d marked FAIL and re-queued; it resumes from its last checkpoint",
                    err,
                    failed.number,
                )
            exit_stopped(err)
    if shutdown.stopping:
        log.warning("stopped by signal %s between trials", shutdown.signum)
        exit_stopped(WorkerStopped(shutdown.signum))


def run_search(cfg: DictConfig, plan: StudyPlan | None = None) -> optuna.Study:
    """Run ``study.n_trials`` trials of the configured study in this process (0: only create
    the study and enqueue its fixed trials), then, with ``study.confirm.auto``, confirm.

    ``cfg`` is a checked config and ``plan`` its study plan (``hpsearch.app.compose_config``:
    schema, search space, fixed trials, baselines and confirmation baselines, storage URL). The
    dataset and the backbone weights are loaded before the study is created or touched, so bad
    paths fail first. Without ``plan`` it is computed here (``hpsearch.plan.plan_study``).
    """
    plan = plan if plan is not None else plan_study(cfg)
    cfg, workspace, checkpoints = _open_worker(cfg)
    workspace.check_backbones(cfg, plan.distributions)  # every backbone choice, before the study

    study = prepare_study(cfg, plan.enqueued, setup=lambda study: enqueue_baselines(study, plan))
    n_trials = int(cfg.study.n_trials)
    if n_trials > 0 and (note := appending_note(study, str(cfg.storage.url))):
        log.info(note)
    if n_trials == 0:
        log.info(
            "study %r is ready in %s (%d trials so far)",
            study.study_name,
            safe_url(str(cfg.storage.url)),
            len(study.get_trials(deepcopy=False)),
        )
        return study

    objective = Objective(cfg, plan, workspace, checkpoints)
    _run_trials(study, cfg, objective, checkpoints, n_trials)
    if workspace.device.type == "cuda":  # what a GPU slot needs: workers_per_device sizing
        log.info(
            "peak GPU memory of this worker: %.0f MiB (torch.cuda.max_memory_allocated)",
            torch.cuda.max_memory_allocated(workspace.device) / 2**20,
        )
    log.info(
        "best trials of study %r:\n%s",
        study.study_name,
        best_trials_table(study, int(cfg.study.top_k)),
    )
    if cfg.study.confirm.auto:
        try:
            _confirm(study, cfg, plan, objective, checkpoints)
        except HpsearchError as err:  # e.g. every trial pruned: the search itself succeeded
            log.warning("study.confirm.auto: not confirmed: %s", err)
    log.info("storage: %s", safe_url(str(cfg.storage.url)))
    return study


def run_confirm(cfg: DictConfig, plan: StudyPlan | None = None) -> optuna.Study:
    """``mode=confirm``: enqueue the confirmation trials of study ``study.name`` (once, however
    many workers do it), run the waiting ones in this process, and print the answer.

    Nothing is enqueued when an input is bad: the config, the baselines and the storage (checked
    by ``compose_config``), a study that does not exist, has no complete search trial, or was
    searched with other values.
    """
    plan = plan if plan is not None else plan_study(cfg)
    study = load_existing_study(str(cfg.storage.url), str(cfg.study.name))
    plan_confirmation(study, cfg, plan)  # nothing to confirm / other config: fail here
    cfg, workspace, checkpoints = _open_worker(cfg)
    workspace.check_backbones(cfg, plan.distributions)
    study = prepare_study(cfg, [])  # this worker's storage (heartbeat), sampler and pruner
    _confirm(study, cfg, plan, Objective(cfg, plan, workspace, checkpoints), checkpoints)
    log.info("storage: %s", safe_url(str(cfg.storage.url)))
    return study


def _confirm(
    study: optuna.Study,
    cfg: DictConfig,
    plan: StudyPlan,
    objective: Objective,
    checkpoints: CheckpointStore,
) -> None:
    """Enqueue what is missing (under the setup lock), run waiting confirmation trials until
    none is left, then log the answer."""
    with setup_lock(str(cfg.storage.url)):
        added = enqueue_confirmation(study, plan_confirmation(study, cfg, plan))
    log.info(
        "confirmation of study %r: %d trials enqueued (top %d configurations and %s, "
        "%d seeds each)",
        study.study_name,
        len(added),
        int(cfg.study.confirm.top_k),
        ", ".join(cfg.study.confirm.baselines) or "no baselines",
        int(cfg.study.confirm.seeds),
    )
    _run_confirmations(study, cfg, objective, checkpoints)
    answer = record_answer(study)
    if answer is not None:
        log.info(
            "confirmation of study %r:\n%s\nanswer: %s",
            study.study_name,
            "\n".join(f"  {line}" for line in arm_lines(answer)),
            answer.recommendation,
        )


def _run_confirmations(
    study: optuna.Study, cfg: DictConfig, objective: Objective, checkpoints: CheckpointStore
) -> int:
    """Run waiting confirmation trials until none is left; the number run.

    Looking for a waiting one and taking it (optuna's ask) is one step under the storage's setup
    lock, released as soon as the trial starts: when another confirming worker took the last
    one, this worker stops instead of asking, which would create a new search trial."""
    url = str(cfg.storage.url)
    ran = 0
    while True:
        with contextlib.ExitStack() as held:
            held.enter_context(setup_lock(url))
            if waiting_confirmations(study) == 0:
                return ran

            def taken(trial: optuna.Trial) -> float:
                held.close()  # the trial is this worker's now: let the others ask
                return objective(trial)

            _run_trials(study, cfg, taken, checkpoints, 1, record_answer)
            ran += 1
