"""A checkpoint that cannot be written (full disk, vanished mount) costs that checkpoint, not the
trial: the trial completes, says which checkpoint was missed and why, and its pointer stays on
the last checkpoint that was written."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path
from typing import BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore

from hpsearch.app import compose_config
from hpsearch.plan import plan_study
from hpsearch.record import CHECKPOINT_ERROR
from hpsearch.trial import Objective, Workspace
from hpsearch.trial.checkpoints import POINTER_ATTR, CheckpointStore

TINY = [
    "progress=false",
    "device=cpu",
    "data.train_per_class=40",
    "data.val_per_class=20",
    "data.test_per_class=20",
    "data.synthetic.source_per_class=100",
    "data.synthetic.source_epochs=3",
    "ft.epochs=3",
    "search_space={hp.epochs:{type:int,low:1,high:2}}",
]


class FullFrom(FileSystemArtifactStore):
    """A directory whose disk fills up at the first checkpoint named ``phase``: that write
    leaves part of its file, and it and every later write fail with ENOSPC."""

    def __init__(self, path: Path, phase: str) -> None:
        super().__init__(path)
        self.phase, self.full = phase, False

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.full = self.full or f"-{self.phase}-" in artifact_id
        if not self.full:
            return super().write(artifact_id, content_body)
        (self._base_path / artifact_id).write_bytes(content_body.read(100))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def run_one_trial(tmp_path: Path, store: CheckpointStore) -> optuna.trial.FrozenTrial:
    cfg = compose_config(TINY + [f"storage.cache_dir={tmp_path / 'cache'}"])
    objective = Objective(cfg, plan_study(cfg), Workspace(cfg), store)
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)
    return study.trials[0]


def test_a_full_disk_costs_the_checkpoints_not_the_trial(tmp_path: Path, caplog) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    store = CheckpointStore(FullFrom(artifacts, "ft_epoch_2"))
    with caplog.at_level(logging.WARNING):
        trial = run_one_trial(tmp_path, store)
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs["ft_epochs_run"] == 3
    assert trial.user_attrs[CHECKPOINT_ERROR] == "ft_epoch_3: No space left on device"
    pointer = trial.system_attrs[POINTER_ATTR]
    assert pointer["phase"] == "ft_epoch_1"  # the last checkpoint that was written
    # No partial file is left; the pointed-at checkpoint is (no callback removed it here).
    assert [p.name for p in artifacts.iterdir()] == [pointer["artifact_id"]]
    assert caplog.text.count("not written (ft_epoch_") == 2
    assert "Traceback" not in caplog.text


def test_a_vanished_checkpoint_directory_costs_the_checkpoints_not_the_trial(
    tmp_path: Path,
) -> None:
    store = CheckpointStore.at(str(tmp_path / "mount" / "artifacts"))
    shutil.rmtree(tmp_path / "mount")  # the mount is gone; it is not re-created locally
    trial = run_one_trial(tmp_path, store)
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs[CHECKPOINT_ERROR] == "ft_epoch_3: No such file or directory"
    assert POINTER_ATTR not in trial.system_attrs
    assert not (tmp_path / "mount").exists()


def test_a_finished_retry_removes_the_checkpoints_its_failed_trials_left(tmp_path):
    """kill -9 between writing a checkpoint and pointing the trial at it leaves a file nothing
    points to; the retry's completion removes it with the rest of the chain's files."""
    import optuna

    from hpsearch.trial.checkpoints import POINTER_ATTR, CheckpointStore

    store = CheckpointStore.at(str(tmp_path))
    for name in (
        "hpsearch-trial1-ft_epoch_18-aaaa.pt",
        "hpsearch-trial2-ft_epoch_30-bbbb.pt",
        "hpsearch-trial3-hp-cccc.pt",
    ):
        (tmp_path / name).write_bytes(b"x")
    retry = optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE,
        value=0.5,
        system_attrs={
            "failed_trial": 1,
            "retry_history": [1],
            POINTER_ATTR: {
                "artifact_id": "hpsearch-trial2-ft_epoch_30-bbbb.pt",
                "trial": 2,
                "phase": "ft_epoch_30",
                "ft_epoch": 30,
            },
        },
    )
    retry.number = 2
    store.on_trial_finished(None, retry)
    # trial 3 is another trial, maybe still running: its checkpoint stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hpsearch-trial3-hp-cccc.pt"]
