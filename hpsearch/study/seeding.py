"""The sampler seed of one worker's run, recorded in every trial that run's sampler starts.

A worker's sampler is seeded from ``study.seed``, the worker's index (``HPSEARCH_WORKER_INDEX``)
and how many trials the study had run when the worker started. On a fresh study that is
``study.seed + index``, as it always was; a rerun of the same command on the same study (more
trials, or the documented rerun after exit code 3) starts from a study that holds trials, so its
samplers draw new configurations instead of repeating the first run's while they are in their
random phase. Each trial keeps the seed of the sampler that proposed it (user attr
``sampler_seed``), so the run that made it can be repeated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from hpsearch.record import SAMPLER_SEED  # the seed of the sampler that proposed a trial

_RAN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def run_seed(study_seed: int, worker: int, trials_before: int) -> int:
    """The sampler seed of a worker's run: ``study_seed + worker`` on a fresh study, else a
    value mixed from all three (numpy's SeedSequence), so runs never share a seed by chance of
    arithmetic (``seed + 1`` of run 1 is not ``seed + 0`` of run 2)."""
    if trials_before == 0:
        return int(study_seed) + int(worker)
    entropy = [int(study_seed) & 0xFFFFFFFF, int(worker) & 0xFFFFFFFF, int(trials_before)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def trials_run(study: optuna.Study) -> int:
    """Trials the study has started so far (waiting ones, such as fixed trials, do not count)."""
    return len(study.get_trials(deepcopy=False, states=_RAN))


class SeedRecordingSampler(optuna.samplers.BaseSampler):
    """``sampler`` as is, and the user attr ``sampler_seed`` = ``seed`` on every trial it starts."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, seed: int) -> None:
        self.sampler, self.seed = sampler, int(seed)

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: Any) -> dict:
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: Any, param_name: str, distribution: Any
    ) -> Any:
        return self.sampler.sample_independent(study, trial, param_name, distribution)

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        study._storage.set_trial_user_attr(trial._trial_id, SAMPLER_SEED, self.seed)
        self.sampler.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["sampler"], name)
