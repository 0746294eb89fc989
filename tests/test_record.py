"""The trial record: every attr a trial writes is a field, read and written through it."""

from __future__ import annotations

import optuna
import pytest

from hpsearch.record import (
    GATE_ATTRS,
    INCIDENT_ATTRS,
    TRIAL_ATTRS,
    TrialRecord,
    schedule_text,
    write,
)


def test_the_fields_are_exactly_the_documented_attrs() -> None:
    import dataclasses

    fields = {f.name for f in dataclasses.fields(TrialRecord)}
    assert fields == set(TRIAL_ATTRS) | set(INCIDENT_ATTRS) | set(GATE_ATTRS)


def test_a_trial_written_through_the_record_reads_back_as_the_same_record() -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    write(trial, {"tau": 4, "label_smoothing": 0.1, "energy": 0.25, "baseline": True})
    with pytest.raises(KeyError, match="enrgy"):
        write(trial, {"enrgy": 1.0})  # a misspelt attr never reaches the study
    study.tell(trial, 0.5)
    record = TrialRecord.of(study.trials[0])
    assert (record.tau, record.energy, record.baseline, record.test_acc) == (4, 0.25, True, None)
    assert record.attrs() == {"tau": 4, "label_smoothing": 0.1, "energy": 0.25, "baseline": True}
    assert TrialRecord.from_attrs({"an_old_attr": 1, "tau": 2}).tau == 2


def test_one_schedule_formatter() -> None:
    lp = TrialRecord(
        tau=6, label_smoothing=0.1, head_depth=1, layers_copied=5, hp_lr=0.05, ft_lr=0.012
    )
    assert schedule_text(lp) == "τ=6 ε=0.1 depth=1 copied=5 hp_lr=0.05 ft_lr=0.012"
    assert schedule_text(TrialRecord(tau=0, head_depth=2, layers_copied=4, ft_lr=0.1)) == (
        "τ=0 depth=2 copied=4 ft_lr=0.1"
    )
    assert schedule_text(TrialRecord(hp_until_converged=True)).startswith("τ=conv ε=?")
    assert schedule_text(TrialRecord(tau=3, ft_lr=float("nan"))).endswith("ft_lr=?")
