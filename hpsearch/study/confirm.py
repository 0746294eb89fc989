"""Confirmation: repeat the search's best configurations and the baselines on shared seeds.

A search ranks its trials by one run each. On a 1,000-image validation split one run moves by
about a point from seed to seed, so the best trial is often the luckiest. Confirmation enqueues,
into the same study:

- the top ``study.confirm.top_k`` distinct configurations among the complete search trials (not
  baselines, not confirmation trials), each with its search trial's params;
- each schedule of ``study.confirm.baselines``, as ``study.baselines`` enqueues one (user attrs
  ``schedule`` and ``baseline=true``);

each once per seed ``confirm_seed(seed, 0 .. seeds−1)``, with user attrs ``confirm_of`` (the search
trial's number, or the baseline's name) and ``confirm_seed``. Every arm runs the same seeds, so
its differences to a baseline are paired. The search trial itself is not one of the seeds: it was
picked because its one run scored highest, so its value is biased upward (the winner's curse);
the answer shows it next to the confirmed mean instead.

To the workers confirmation trials are ordinary trials: whichever worker of the study asks next
runs them (``mode=confirm workers=N``, or search workers still running); the Objective gives them
their ``confirm_seed`` and never lets a pruner stop them. Enqueueing runs under the storage's
setup lock and skips every (arm, seed) already present and not failed, so running ``mode=confirm``
again, or from many workers at once, adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import HpsearchError
from hpsearch.plan import CONFIRM_BASELINES_KEY, StudyPlan
from hpsearch.record import BASELINE as BASELINE_ATTR
from hpsearch.record import CONFIRM_OF, CONFIRM_SEED, TrialRecord
from hpsearch.record import SCHEDULE as SCHEDULE_ATTR
from hpsearch.space import contains
from hpsearch.trial.records import confirm_seed, is_confirmation

BASELINES_KEY = CONFIRM_BASELINES_KEY
# What decides the result of a trial: a confirmation must run with the search's values for these.
TRIAL_KEYS = (
    "experiment",
    "seed",
    "data",
    "backbone",
    "head",
    "hp",
    "ft",
    "schedule",
    "search_space",
)


@dataclass(frozen=True)
class Planned:
    """One confirmation trial: the params it is enqueued with and its user attrs."""

    params: dict[str, Any]
    user_attrs: dict[str, Any]

    @property
    def key(self) -> tuple[Any, int]:
        return self.user_attrs[CONFIRM_OF], self.user_attrs[CONFIRM_SEED]


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def check_search_config(study: optuna.Study, cfg: DictConfig) -> None:
    """The config must run trials as the search did: the values of ``TRIAL_KEYS`` equal those the
    study was created with (its user attr ``config``), else an HpsearchError names the first
    key that differs."""
    stored = study.user_attrs.get("config")
    if not isinstance(stored, Mapping):
        return  # a study made outside the command line: nothing to compare with
    here = OmegaConf.to_container(cfg, resolve=True)
    for part in TRIAL_KEYS:
        was, now = _flat(stored.get(part), f"{part}."), _flat(here.get(part), f"{part}.")
        for key in sorted(set(was) | set(now)):
            if was.get(key) != now.get(key):
                raise HpsearchError(
                    f"{key}={now.get(key)!r} differs from the search's {key}={was.get(key)!r} "
                    f"in study {study.study_name!r}: confirm with the overrides the search ran "
                    "with, so that confirmation trials run what the search ran"
                )


def search_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials of the search itself (not baselines, not confirmations), best first."""
    done = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.value is not None
        and not TrialRecord.of(t).baseline
        and not is_confirmation(t)
    ]
    return sorted(done, key=lambda t: (-float(t.value), t.number))


def top_configurations(trials: Sequence[FrozenTrial], k: int) -> list[FrozenTrial]:
    """The best ``k`` search trials with distinct params (a repeated configuration counts once,
    under its best trial)."""
    seen, top = set(), []
    for t in search_trials(trials):
        params = json.dumps(t.params, sort_keys=True, default=str)
        if params not in seen:
            seen.add(params)
            top.append(t)
        if len(top) == k:
            break
    return top


def plan_confirmation(
    study: optuna.Study,
    cfg: DictConfig,
    plan: StudyPlan,
) -> list[Planned]:
    """Every confirmation trial the config asks for, present or not; an HpsearchError when there
    is nothing to confirm or a configuration does not fit the search space."""
    confirm = cfg.study.confirm
    distributions = plan.distributions
    trials = study.get_trials(deepcopy=False)
    top = top_configurations(trials, int(confirm.top_k))
    if not top:
        states = (
            ", ".join(
                f"{n} {s.name.lower()}"
                for s, n in sorted(_counts(trials).items(), key=lambda kv: kv[0].value)
            )
            or "no trials"
        )
        raise HpsearchError(
            f"study {study.study_name!r} has no complete search trial to confirm "
            f"({states}); run mode=search first"
        )
    check_search_config(study, cfg)
    seeds = [confirm_seed(int(cfg.seed), slot) for slot in range(int(confirm.seeds))]
    planned = []
    for t in top:
        for key, value in t.params.items():
            if key not in distributions or not contains(distributions[key], value):
                raise HpsearchError(
                    f"trial {t.number}: {key}={value!r} is not in the search "
                    "space of this config; confirm with the overrides the search "
                    "ran with"
                )
        planned += [Planned(dict(t.params), {CONFIRM_OF: t.number, CONFIRM_SEED: s}) for s in seeds]
    for arm in plan.confirm_arms:
        params = arm.params
        planned += [
            Planned(
                params,
                {
                    SCHEDULE_ATTR: arm.name,
                    BASELINE_ATTR: True,
                    CONFIRM_OF: arm.name,
                    CONFIRM_SEED: s,
                },
            )
            for s in seeds
        ]
    return planned


def _counts(trials: Sequence[FrozenTrial]) -> dict[TrialState, int]:
    counts: dict[TrialState, int] = {}
    for t in trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    return counts


def missing(study: optuna.Study, planned: Sequence[Planned]) -> list[Planned]:
    """The planned trials with no confirmation trial of the same (arm, seed) in the study that
    has not failed (a failed one may be re-queued by the retry callback; if not, it is redone)."""
    records = (
        TrialRecord.of(t) for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL
    )
    present = {(r.confirm_of, r.confirm_seed) for r in records if r.confirm_of is not None}
    return [p for p in planned if p.key not in present]


def enqueue_confirmation(study: optuna.Study, planned: Sequence[Planned]) -> list[Planned]:
    """Enqueue the planned trials not yet in the study; return them. Call it under the storage's
    setup lock (``prepare_study``) so that concurrent callers do not both enqueue a trial."""
    todo = missing(study, planned)
    for p in todo:
        study.enqueue_trial(p.params, user_attrs=p.user_attrs)
    return todo


def waiting_confirmations(study: optuna.Study) -> int:
    """Confirmation trials not yet taken by a worker."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if is_confirmation(t)
    )
