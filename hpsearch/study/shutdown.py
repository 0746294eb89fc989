"""Clean shutdown of a worker on SIGTERM or SIGINT.

``docker compose down``, a cluster scheduler or Ctrl-C stop a worker with SIGTERM/SIGINT. The
running trial must not stay RUNNING for ever, and its work so far must not be lost:

1. While a trial runs, the signal raises :class:`WorkerStopped` in it at once — unless the worker
   is inside a storage call or writing a checkpoint, which is let finish first (a transaction
   cut in half could leave the trial unrecorded; a half-written checkpoint is useless). The
   newest checkpoint therefore always is the last finished FT epoch.
2. The trial gets its ``fail_reason``; Optuna marks it FAIL (``WorkerStopped`` is a
   ``KeyboardInterrupt``) and re-raises.
3. :func:`requeue_stopped_trial` re-queues it with the retry callback the heartbeat uses, so any
   worker picks it up again and resumes it from that checkpoint.
4. A signal between trials stops the worker after the current storage call (``study.stop``);
   a second signal is not caught any more and ends the process the default way.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import optuna

from hpsearch.record import FAIL_REASON

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RETRY_DELAY_S = 0.05  # how soon a deferred stop is tried again
# Code that must not be interrupted half-way: database calls and checkpoint writes.
CRITICAL_MODULES = (
    "sqlalchemy",
    "psycopg2",
    "optuna.storages",
    "optuna.artifacts",
    "hpsearch.trial.checkpoints",
)


class WorkerStopped(KeyboardInterrupt):
    """The worker received SIGTERM/SIGINT; the trial it interrupted is failed and re-queued."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for "killed by signal N"


class OneLineFailures(logging.Filter):
    """Optuna logs a failed trial with its traceback; for the expected ends of a trial (a stop,
    a lost storage) the one line is enough."""

    def __init__(self, *types: type[BaseException]) -> None:
        super().__init__()
        self.types = types

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.types):
            record.exc_info, record.exc_text = None, None
        return True

    def __enter__(self) -> OneLineFailures:
        for handler in logging.getLogger("optuna").handlers:
            handler.addFilter(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        for handler in logging.getLogger("optuna").handlers:
            handler.removeFilter(self)


class GracefulShutdown:
    """Install the stop handlers around ``study.optimize``; wrap the objective with
    :meth:`objective` and add :meth:`callback` to the optimize callbacks.

    ``current_trial_id`` is the trial that was running when the worker was stopped.
    """

    def __init__(self) -> None:
        self.signum: int | None = None  # the stop signal received, if any
        self.current_trial_id: int | None = None
        self._in_trial = False
        self._previous: dict[int, Any] = {}
        self._wrapper_code: Any = None
        self._log_filter = OneLineFailures(WorkerStopped)

    def __enter__(self) -> GracefulShutdown:
        self._log_filter.__enter__()
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            self._previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_alarm)
        return self

    def __exit__(self, *exc: Any) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self._restore()
        self._log_filter.__exit__()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def stopping(self) -> bool:
        return self.signum is not None

    def objective(self, func: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
        """``func`` run so that a stop signal interrupts it (and only it)."""

        def run_trial(trial: optuna.Trial) -> float:
            self.current_trial_id = trial._trial_id
            try:
                if self.stopping:  # the signal came while this trial was being created
                    raise WorkerStopped(self.signum)
                self._in_trial = True
                return func(trial)
            except WorkerStopped as err:
                self._in_trial = False  # the write below must not be interrupted again
                try:
                    trial.set_user_attr(FAIL_REASON, f"{err}: the worker was shut down")
                except Exception as write_err:  # storage gone, trial taken: the stop goes on
                    log.warning("trial %d: fail_reason not recorded (%s)", trial.number, write_err)
                raise
            finally:
                self._in_trial = False

        self._wrapper_code = run_trial.__code__
        return run_trial

    def callback(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """``study.optimize`` callback: after a trial ends, stop if a signal came meanwhile."""
        self.current_trial_id = None
        if self.stopping:
            study.stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("received %s: stopping this worker", signal.Signals(signum).name)
        if self.stopping:
            return
        self.signum = signum
        for sig in STOP_SIGNALS:  # a second signal ends the process the default way
            signal.signal(sig, self._previous.get(sig, signal.SIG_DFL))
        self._interrupt(frame)

    def _on_alarm(self, _signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            self._interrupt(frame)

    def _interrupt(self, frame: FrameType | None) -> None:
        if not self._in_trial:
            return  # between trials: the callback stops optimize, or the wrapper raises
        if self._in_critical_code(frame):
            signal.setitimer(signal.ITIMER_REAL, RETRY_DELAY_S)  # try again when it is done
            return
        raise WorkerStopped(self.signum)

    def _in_critical_code(self, frame: FrameType | None) -> bool:
        """Whether the trial is inside a storage call or a checkpoint write (frames between the
        innermost one and the trial wrapper)."""
        while frame is not None and frame.f_code is not self._wrapper_code:
            name = str(frame.f_globals.get("__name__", ""))
            if name.startswith(CRITICAL_MODULES):
                return True
            frame = frame.f_back
        return False


def requeue_stopped_trial(
    study: optuna.Study,
    trial_id: int | None,
    retry: Callable[[optuna.Study, optuna.trial.FrozenTrial], None],
) -> optuna.trial.FrozenTrial | None:
    """Make sure the interrupted trial is FAIL (not RUNNING) and re-queue it with ``retry``
    (``RetryHeartbeatStaleTrialCallback``: same parameters, checkpoint pointer inherited, the
    retry budget respected). Returns the failed trial, or None if none was running."""
    if trial_id is None:
        return None
    storage = study._storage
    trial = storage.get_trial(trial_id)
    if trial.state == optuna.trial.TrialState.RUNNING:  # optuna could not record the failure
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        trial = storage.get_trial(trial_id)
    if trial.state == optuna.trial.TrialState.FAIL:
        retry(study, trial)
        return trial
    return None


def exit_stopped(err: WorkerStopped) -> None:
    """End the process with the signal's exit code (130 for SIGINT, 143 for SIGTERM)."""
    sys.exit(err.exit_code)
