"""A worker's trial loop: ``study.optimize`` kept going through a lost trial, and ended cleanly
when the storage is gone.

Two things that Optuna's loop turns into a crash of the worker (a ``ValueError`` or an
``UnboundLocalError`` from its ``tell``, with a traceback) end differently here:

* **A lost trial.** Another worker failed this worker's trial as stale while it was running
  (its heartbeats were blocked longer than the grace period) and re-queued it. The trial's next
  write, or its ``tell``, finds it finished: :class:`~hpsearch.study.outage.TrialLost`. The
  worker drops it (its retry resumes from its checkpoint wherever it runs), does not count it,
  and runs another trial.
* **A storage that stays unreachable** past ``storage.outage_timeout``. The trial in progress is
  marked FAIL with its ``fail_reason`` and re-queued if the storage answers one more time (each
  write tried once); otherwise it stays RUNNING and a worker fails and retries it after the
  grace period (heartbeat). Then :class:`~hpsearch.errors.StorageUnreachable` is raised: one
  line, exit code 3.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import StorageUnreachable, is_disk_full
from hpsearch.record import FAIL_REASON
from hpsearch.study.outage import ResilientStorage, TrialLost, is_connection_error
from hpsearch.study.shutdown import OneLineFailures

log = logging.getLogger(__name__)

Callback = Callable[[optuna.Study, FrozenTrial], None]


class _Guard:
    """The objective, watched: which trial runs, and whether another worker took it away."""

    def __init__(
        self, objective: Callable[[optuna.Trial], float], storage: ResilientStorage
    ) -> None:
        self.objective, self.storage = objective, storage
        self.trial_id: int | None = None  # the trial started last, until its callbacks ran
        self.raised_unreachable = False  # the objective itself ended with StorageUnreachable
        self.lost: int | None = None  # number of a trial another worker took away
        self.trial_number: int | None = None  # the number of the trial started last

    def __call__(self, trial: optuna.Trial) -> float:
        self.trial_id, self.raised_unreachable = trial._trial_id, False
        self.trial_number = trial.number
        try:
            value = self.objective(trial)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise self._lost(trial) from None
        except StorageUnreachable as err:
            self.raised_unreachable = True
            self._record_reason(trial, str(err))  # before Optuna's tell fails the trial
            raise
        except Exception:  # pruned or failed: Optuna's tell would fail on a finished trial
            self._check_running(trial)
            raise
        self._check_running(trial)
        return value

    def _record_reason(self, trial: optuna.Trial, reason: str) -> None:
        with self.storage.single_attempt():
            try:
                self.storage.set_trial_user_attr(trial._trial_id, FAIL_REASON, reason)
            except Exception as err:
                if not (is_connection_error(err) or is_disk_full(err)):
                    raise

    def _check_running(self, trial: optuna.Trial) -> None:
        if self.storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            raise self._lost(trial) from None

    def _lost(self, trial: optuna.Trial) -> TrialLost:
        self.lost = trial.number
        return TrialLost(
            f"trial {trial.number} was failed as stale by another worker while "
            "this one ran it, and re-queued; this worker drops it"
        )

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Last ``study.optimize`` callback: the trial is told and its callbacks ran."""
        self.trial_id = None


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    callbacks: Sequence[Callback],
    catch: tuple[type[Exception], ...],
    retry: Callback,
) -> None:
    """Run trials of ``study`` (whose storage is a :class:`ResilientStorage`) until ``n_trials``
    of them have finished in this worker — COMPLETE, PRUNED, or FAIL by an exception in
    ``catch`` — or the study is stopped (``study.stop``). ``retry`` re-queues a failed trial.

    Raises StorageUnreachable when the storage stayed unreachable (module doc); a stop signal's
    ``WorkerStopped`` and any other error of a trial propagate as from ``study.optimize``.
    """
    storage = study._storage
    assert isinstance(storage, ResilientStorage), type(storage)
    guard = _Guard(objective, storage)
    done = 0

    def count(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal done
        done += 1

    with OneLineFailures(TrialLost, StorageUnreachable):
        while done < n_trials:
            try:
                study.optimize(
                    guard,
                    n_trials=n_trials - done,
                    callbacks=[*callbacks, count, guard.finished],
                    catch=catch,
                )
                return
            except Exception:
                if storage.unreachable is not None:
                    if guard.trial_id is not None:
                        _abandon(
                            study,
                            guard.trial_id,
                            guard.raised_unreachable,
                            str(storage.unreachable),
                            retry,
                            guard.trial_number,
                        )
                    raise storage.unreachable from None
                if guard.lost is None:
                    raise
                log.warning(
                    "trial %d was failed as stale by another worker (this worker's "
                    "heartbeat was blocked) and re-queued; going on with another trial",
                    guard.lost,
                )
                guard.lost = guard.trial_id = None


def _abandon(
    study: optuna.Study,
    trial_id: int,
    failed_by_outage: bool,
    reason: str,
    retry: Callback,
    number: int | None = None,
) -> None:
    """Re-queue the trial in progress, then fail it with ``reason``, each write tried once.

    The retry comes first: a storage that takes one write and refuses the next (a full disk)
    then leaves the trial RUNNING with its retry waiting (a later worker fails it as stale and
    does not queue a second retry), never FAIL without a retry (lost for good)."""
    storage: ResilientStorage = study._storage
    with storage.single_attempt():
        try:
            trial = storage.get_trial(trial_id)
            if trial.state == TrialState.RUNNING:
                storage.set_trial_user_attr(trial_id, FAIL_REASON, reason)
                retry(study, storage.get_trial(trial_id))
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
            elif trial.state == TrialState.FAIL and failed_by_outage:
                retry(study, storage.get_trial(trial_id))
            else:
                return  # finished before the storage went away, or failed for another reason
            log.warning(
                "trial %d marked FAIL and re-queued; it resumes from its last checkpoint",
                trial.number,
            )
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it meanwhile, and re-queued it
        except Exception as err:
            if not (is_connection_error(err) or is_disk_full(err)):
                raise
            log.warning(
                "trial %s: its end could not be recorded (the storage is unreachable or full); "
                "if it is still RUNNING once the storage is back, a worker fails it after "
                "storage.grace_period and retries it from its checkpoint",
                trial_id if number is None else number,
            )
