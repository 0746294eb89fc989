"""Trial checkpoints in an Optuna artifact store, so that a retried trial resumes instead of
restarting.

A trial saves its state twice over its life: after HP (the network after HP, the HP metrics)
and after every FT epoch (``Finetuner.state_dict``: model, optimiser, scheduler, RNG, epoch,
validation curve). A retry of a failed trial — its worker died (heartbeat) or was stopped
(SIGTERM/SIGINT) — loads the newest checkpoint of the trial it retries and continues with the
next FT epoch.

Crash safety: each checkpoint is written under a fresh artifact id, and only after the write has
finished is the trial's system attr ``hpsearch:checkpoint`` pointed at it; the checkpoint it
replaces is removed after that. A worker killed in the middle of a write therefore leaves the
pointer on the previous, complete checkpoint. (``optuna.artifacts.upload_artifact`` registers
the artifact before writing it, so it is not used here.) ``RetryHeartbeatStaleTrialCallback``
copies the failed trial's system attrs to the retry, so the retry inherits the pointer, and a
retry of a retry finds the newest checkpoint of the whole chain. When a trial finishes
(complete or pruned) its checkpoint is removed: a study keeps at most one checkpoint per
unfinished trial.

The store is ``storage.artifacts``: a directory (``FileSystemArtifactStore``); workers on several
machines need it on a shared filesystem (NFS, a mounted bucket, a docker volume).

A checkpoint that cannot be written (a full disk, a vanished mount: any ``OSError``) is skipped:
the trial goes on, its pointer stays on the previous checkpoint, and the trial's user attr
``checkpoint_error`` says which checkpoint was missed and why (a retry would resume from an
earlier one, or start over). Every later checkpoint is tried again.
"""

from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from hpsearch.errors import HpsearchError
from hpsearch.record import CHECKPOINT_ERROR

log = logging.getLogger(__name__)

POINTER_ATTR = "hpsearch:checkpoint"  # trial system attr: the trial's newest checkpoint
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """The state of a trial after HP (``ft_epoch == 0``, ``finetuner is None``) or after FT
    epoch ``ft_epoch`` (``finetuner`` = ``Finetuner.state_dict()``)."""

    trial_number: int  # the trial that wrote it
    seed: int  # the trial seed the state was built with; a resume keeps it
    hp_attrs: dict[str, Any]  # HP metrics (user attrs) of the trial
    net: dict[str, torch.Tensor] | None = None  # network after HP (phase "hp")
    finetuner: dict[str, Any] | None = None  # FT state after ft_epoch epochs (phase "ft")
    ft_epoch: int = 0

    @property
    def phase(self) -> str:
        return "hp" if self.finetuner is None else f"ft_epoch_{self.ft_epoch}"

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(
            {
                "format": FORMAT_VERSION,
                "trial_number": self.trial_number,
                "seed": self.seed,
                "hp_attrs": self.hp_attrs,
                "net": self.net,
                "finetuner": self.finetuner,
                "ft_epoch": self.ft_epoch,
            },
            buffer,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if state.get("format") != FORMAT_VERSION:
            raise ValueError(f"checkpoint format {state.get('format')!r} != {FORMAT_VERSION}")
        return cls(
            int(state["trial_number"]),
            int(state["seed"]),
            dict(state["hp_attrs"]),
            state["net"],
            state["finetuner"],
            int(state["ft_epoch"]),
        )


class CheckpointStore:
    """Save, find and remove trial checkpoints in one artifact store."""

    def __init__(self, artifact_store: Any, directory: Path | None = None) -> None:
        self.artifact_store = artifact_store
        self.directory = directory  # where the files lie, when the store is a directory

    @classmethod
    def at(cls, path: str) -> CheckpointStore:
        """A store in directory ``path`` (created if missing)."""
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise HpsearchError(
                f"storage.artifacts={path!r}: cannot create the checkpoint "
                f"directory ({err.strerror})"
            ) from None
        return cls(FileSystemArtifactStore(path), Path(path))

    def for_trial(self, trial: optuna.Trial) -> TrialCheckpoints:
        return TrialCheckpoints(self, trial)

    def remove(self, artifact_id: str) -> None:
        """Remove a checkpoint if it is there; a store that fails to is only logged (an orphaned
        file is harmless, a failed trial is not)."""
        try:
            self.artifact_store.remove(artifact_id)
        except (ArtifactNotFound, FileNotFoundError):
            pass
        except OSError as err:
            log.warning("checkpoint %s not removed (%s)", artifact_id, err.strerror or err)

    def on_trial_finished(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """``study.optimize`` callback: a finished trial needs no checkpoint any more, nor do the
        failed trials it retried. A worker killed between writing a checkpoint and pointing its
        trial at it leaves a file nothing points to: those go too, by the trial numbers in their
        names."""
        if trial.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            return
        pointer = trial.system_attrs.get(POINTER_ATTR)
        if pointer:
            self.remove(pointer["artifact_id"])
        if self.directory is None:
            return
        attrs = trial.system_attrs
        chain = {trial.number, *attrs.get("retry_history", [])}
        if attrs.get("failed_trial") is not None:
            chain.add(attrs["failed_trial"])
        for number in chain:
            for path in self.directory.glob(f"hpsearch-trial{int(number)}-*.pt"):
                self.remove(path.name)


class TrialCheckpoints:
    """The checkpoints of one running trial: the one it may resume from, and the ones it saves."""

    def __init__(self, store: CheckpointStore, trial: optuna.Trial) -> None:
        self.store, self.trial = store, trial
        # The pointer is the trial's own or, for a retry, the one it inherited.
        attrs = trial.storage.get_trial_system_attrs(trial._trial_id)
        self.pointer: dict[str, Any] | None = attrs.get(POINTER_ATTR)

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint of this trial or of the trials it retries; None for a fresh
        start (also when that checkpoint is gone or unreadable: the trial then starts over)."""
        if not self.pointer:
            return None
        artifact_id = self.pointer["artifact_id"]
        try:
            with self.store.artifact_store.open_reader(artifact_id) as reader:
                return Checkpoint.from_bytes(reader.read())
        except Exception as err:  # missing, truncated or from another version: start over
            log.warning(
                "trial %d: checkpoint %s of trial %s is unusable (%s: %s); starting over",
                self.trial.number,
                artifact_id,
                self.pointer.get("trial"),
                type(err).__name__,
                err,
            )
            return None

    def save(self, checkpoint: Checkpoint) -> bool:
        """Write ``checkpoint``, then point the trial at it, then drop the one it replaces.
        False (and ``checkpoint_error`` on the trial) when the store could not write it."""
        artifact_id = (
            f"hpsearch-trial{self.trial.number}-{checkpoint.phase}-{uuid.uuid4().hex[:12]}.pt"
        )
        try:
            self.store.artifact_store.write(artifact_id, io.BytesIO(checkpoint.to_bytes()))
        except OSError as err:
            reason = f"{checkpoint.phase}: {err.strerror or err}"
            log.warning(
                "trial %d: checkpoint %s not written (%s); the trial goes on without it",
                self.trial.number,
                artifact_id,
                reason,
            )
            self.store.remove(artifact_id)  # a partial file
            self.trial.set_user_attr(CHECKPOINT_ERROR, reason)
            return False
        pointer = {
            "artifact_id": artifact_id,
            "trial": self.trial.number,
            "phase": checkpoint.phase,
            "ft_epoch": checkpoint.ft_epoch,
        }
        try:
            self.trial.storage.set_trial_system_attr(self.trial._trial_id, POINTER_ATTR, pointer)
        except BaseException:  # storage gone, or the trial taken away: nothing points at it
            self.store.remove(artifact_id)
            raise
        previous, self.pointer = self.pointer, pointer
        if previous and previous["artifact_id"] != artifact_id:
            self.store.remove(previous["artifact_id"])
        return True
