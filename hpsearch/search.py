"""A search worker: validate everything, open the shared study, run trials, print the best."""
from __future__ import annotations

import logging

import optuna
from omegaconf import DictConfig

from hpsearch.config import validate_config
from hpsearch.schedules import baseline_schedules, enqueue_baselines, study_distributions
from hpsearch.study import (best_trials_table, check_enqueue, create_study, make_pruner,
                            make_sampler, open_storage, safe_url, trial_line)
from hpsearch.trial import Objective, Workspace

log = logging.getLogger("hpsearch")


def run_search(cfg: DictConfig) -> optuna.Study:
    """Run ``study.n_trials`` trials of the configured study in this process.

    Every input is checked before the study is created or touched: the config, the search space,
    the fixed trials, the storage URL, the dataset and the backbone weights.
    """
    validate_config(cfg)
    distributions = study_distributions(cfg)  # the search space less the schedule's keys
    fixed = check_enqueue(cfg, distributions)
    baseline_schedules(cfg)
    storage = open_storage(str(cfg.storage.url))
    workspace = Workspace(cfg)
    task = workspace.task(cfg)  # decodes data and loads weights now, so bad paths fail here
    log.info("data: %d train / %d val / %d test, classes %s; backbone %s (%s); device %s",
             len(task.splits.train), len(task.splits.val), len(task.splits.test),
             task.splits.classes, cfg.backbone.arch, task.pretrained.description,
             workspace.device)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = create_study(cfg, storage, make_sampler(cfg.study), make_pruner(cfg))
    for params in fixed:
        study.enqueue_trial(params, skip_if_exists=True)
    enqueue_baselines(study, cfg, distributions)

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.info(trial_line(study, trial))

    study.optimize(Objective(cfg, distributions, workspace), n_trials=int(cfg.study.n_trials),
                   callbacks=[report])
    log.info("best trials of study %r:\n%s", study.study_name,
             best_trials_table(study, int(cfg.study.top_k)))
    log.info("storage: %s", safe_url(str(cfg.storage.url)))
    return study
