"""The answer of a confirmed study: which schedule to use, and by how much it beats the baselines.

``study_answer`` reads the confirmation trials (user attrs ``confirm_of`` and ``confirm_seed``,
enqueued by ``hpsearch.study.confirm``) and groups them into arms: each confirmed configuration
(``confirm_of`` = the search trial it repeats) and each baseline (``confirm_of`` = the schedule's
name). Per arm: mean ± 95% t interval of FT validation and test accuracy over its seeds. Per
configuration and baseline: the paired differences over the seeds both completed (every arm runs
the same seeds, so seed-to-seed luck shared by both cancels). Then one recommendation:

- a configuration whose validation accuracy beats every baseline beyond the noise (the paired
  interval lies above 0) is recommended, the best such by mean, with its margin over the
  strongest baseline;
- otherwise the strongest baseline is: the simpler recipe, and nothing measured beats it.

``record_answer`` stores it as study user attrs (``ANSWER_ATTRS``) so optuna-dashboard shows it;
the worker calls it after every confirmation trial, ``mode=report`` when it writes the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.record import TrialRecord, schedule_text
from hpsearch.stats import Interval, mean_interval
from hpsearch.trial.records import is_confirmation

LEVEL = 0.95
# study user attr -> meaning
ANSWER_ATTRS = {
    "answer": "the recommendation of mode=confirm: the schedule to use and its margin over the "
    "strongest baseline, with a 95% interval (provisional while trials are pending)",
    "answer_arms": "one line per confirmed configuration and baseline: FT validation and test "
    "accuracy, mean ± 95% interval over its seeds",
}


@dataclass
class Arm:
    """A confirmed configuration (``key`` = its search trial's number) or baseline (``key`` = the
    schedule's name) with its complete confirmation runs, keyed by seed."""

    key: int | str
    baseline: bool
    schedule: str  # the values it runs, as text
    runs: dict[int, FrozenTrial] = field(default_factory=dict)
    pending: int = 0  # confirmation trials waiting or running
    lost: int = 0  # pruned or failed confirmation trials (a retry may follow)
    search_value: float | None = None  # the search trial's FT val acc (a configuration only)

    @property
    def name(self) -> str:
        return str(self.key) if self.baseline else f"trial {self.key}"

    @property
    def label(self) -> str:
        return self.name if self.baseline else f"trial {self.key} ({self.schedule})"

    def values(self, seeds: Sequence[int] | None = None) -> tuple[list[float], list[float]]:
        """(FT val acc, test acc) of the runs on ``seeds`` (all runs: None), in seed order."""
        keys = sorted(self.runs) if seeds is None else list(seeds)
        return (
            [float(self.runs[s].value) for s in keys],
            [float(TrialRecord.of(self.runs[s]).test_acc) for s in keys],
        )

    @property
    def val(self) -> Interval | None:
        return mean_interval(self.values()[0], LEVEL)

    @property
    def test(self) -> Interval | None:
        return mean_interval(self.values()[1], LEVEL)


@dataclass
class Difference:
    """``arm`` − ``baseline`` over the seeds both completed (paired)."""

    arm: Arm
    baseline: Arm
    seeds: list[int]
    val: Interval | None
    test: Interval | None

    def beats(self) -> bool:
        return self.val is not None and self.val.excludes_zero() and self.val.mean > 0


@dataclass
class Answer:
    arms: list[Arm]
    differences: list[Difference]
    recommendation: str
    done: int  # complete confirmation trials
    pending: int  # waiting or running ones

    def difference(self, arm: Arm, baseline: Arm) -> Difference:
        return next(d for d in self.differences if d.arm is arm and d.baseline is baseline)


def _arms(trials: Sequence[FrozenTrial]) -> list[Arm]:
    by_number = {t.number: t for t in trials}
    arms: dict[Any, Arm] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if not is_confirmation(t):
            continue
        record = TrialRecord.of(t)
        key = record.confirm_of
        baseline = bool(record.baseline)
        arm = arms.get(key)
        if arm is None:
            origin = None if baseline else by_number.get(int(key))
            arm = arms[key] = Arm(
                key,
                baseline,
                schedule_text(TrialRecord.of(origin or t)),
                search_value=None if origin is None else origin.value,
            )
        if (
            t.state == TrialState.COMPLETE
            and t.value is not None
            and record.finite("test_acc") is not None
        ):
            arm.runs[int(record.confirm_seed)] = t
        elif t.state in (TrialState.WAITING, TrialState.RUNNING):
            arm.pending += 1
        else:
            arm.lost += 1
    configs = sorted(
        (a for a in arms.values() if not a.baseline),
        key=lambda a: (-(a.search_value or 0.0), a.key),
    )
    return configs + [a for a in arms.values() if a.baseline]


def _difference(arm: Arm, baseline: Arm) -> Difference:
    seeds = sorted(set(arm.runs) & set(baseline.runs))
    (av, at), (bv, bt) = arm.values(seeds), baseline.values(seeds)
    return Difference(
        arm,
        baseline,
        seeds,
        mean_interval([a - b for a, b in zip(av, bv)], LEVEL),
        mean_interval([a - b for a, b in zip(at, bt)], LEVEL),
    )


def points(iv: Interval | None, signed: bool = False) -> str:
    """An accuracy interval in percentage points: ``74.4 ± 1.2`` (``+1.4 ± 0.6`` when signed)."""
    if iv is None:
        return "–"
    mean = f"{100 * iv.mean:+.1f}" if signed else f"{100 * iv.mean:.1f}"
    return mean + (f" ± {100 * iv.half:.1f}" if iv.half is not None else " (1 seed)")


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def recommend(arms: Sequence[Arm], differences: Sequence[Difference]) -> str:
    configs = [a for a in arms if not a.baseline and a.runs]
    baselines = [a for a in arms if a.baseline and a.runs]
    if not configs and not baselines:
        return "no confirmation trial has completed yet"
    if not baselines:
        best = max(configs, key=lambda a: a.val.mean)
        return (
            f"use {best.label}: FT validation accuracy {points(best.val)}% over "
            f"{_seeds(best.val.n)}; no baseline was confirmed to compare it with"
        )
    ref = max(baselines, key=lambda a: a.val.mean)
    diff = {(id(d.arm), id(d.baseline)): d for d in differences}
    winners = [c for c in configs if all(diff[id(c), id(b)].beats() for b in baselines)]
    if not winners:
        n = max(a.val.n for a in configs + baselines)
        return f"no configuration beats {ref.name} beyond the noise ({_seeds(n)}): use {ref.name}"
    best = max(winners, key=lambda a: a.val.mean)
    d = diff[id(best), id(ref)]
    return (
        f"use {best.label}: {points(d.val, signed=True)} points validation over {ref.name} "
        f"({_seeds(d.val.n)}); test {points(d.test, signed=True)}"
    )


def study_answer(trials: Sequence[FrozenTrial]) -> Answer | None:
    """The answer from a study's trials; None when it has no confirmation trial."""
    arms = _arms(trials)
    if not arms:
        return None
    differences = [_difference(a, b) for a in arms if not a.baseline for b in arms if b.baseline]
    done = sum(len(a.runs) for a in arms)
    pending = sum(a.pending for a in arms)
    text = recommend(arms, differences)
    if pending:
        text += f" (provisional: {done} of {done + pending} confirmation trials finished)"
    return Answer(arms, differences, text, done, pending)


def arm_lines(answer: Answer) -> list[str]:
    """One line per arm: ``lp_ft: val 74.4 ± 1.2, test 73.0 ± 0.9 (3 seeds)``."""
    return [
        f"{a.label}: val {points(a.val)}, test {points(a.test)} ({_seeds(len(a.runs))})"
        for a in answer.arms
    ]


def record_answer(study: optuna.Study, trial: FrozenTrial | None = None) -> Answer | None:
    """Store the answer as the study user attrs ``ANSWER_ATTRS`` (a study callback after a
    confirmation trial, or called directly); returns it."""
    if trial is not None and not is_confirmation(trial):
        return None
    answer = study_answer(study.get_trials(deepcopy=False))
    if answer is not None:
        study.set_user_attr("answer", answer.recommendation)
        study.set_user_attr("answer_arms", arm_lines(answer))
    return answer
