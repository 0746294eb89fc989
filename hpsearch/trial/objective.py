"""One trial's life: configure -> head probing -> record -> gate -> finetuning -> record.

``Objective`` is what ``study.optimize`` calls; each step is a call into its own module
(``hpsearch.schedules`` configures, ``trial.hp`` probes, ``trial.gate`` asks the pruner,
``trial.ft`` finetunes, ``trial.records`` names what is written). Every metric is a trial user
attr with a self-explaining name (``records.METRICS``), so optuna-dashboard and the reports read
them directly; FT validation accuracy per epoch is the trial's intermediate values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import optuna
import torch
from omegaconf import DictConfig

from hpsearch.backbones import new_transfer_net
from hpsearch.models import TransferNet
from hpsearch.plan import StudyPlan
from hpsearch.record import TrialRecord
from hpsearch.trial.checkpoints import Checkpoint, CheckpointStore, TrialCheckpoints
from hpsearch.trial.ft import Finetuner, accuracy, features
from hpsearch.trial.gate import gate, judge_epoch
from hpsearch.trial.hp import head_probe
from hpsearch.trial.metrics import feature_adaptation
from hpsearch.trial.records import is_confirmation, schedule_attrs, seed_of, set_attrs
from hpsearch.trial.workspace import Task, Workspace

log = logging.getLogger(__name__)


class Objective:
    """``study.optimize`` target: runs one trial and returns its final validation accuracy."""

    def __init__(
        self,
        cfg: DictConfig,
        plan: StudyPlan,
        workspace: Workspace,
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        self.cfg, self.plan, self.workspace = cfg, plan, workspace
        self.checkpoints = checkpoints  # None: no saving, no resuming

    def trial_config(self, trial: optuna.Trial) -> DictConfig:
        return self.plan.trial_config(trial, self.cfg)

    def __call__(self, trial: optuna.Trial) -> float:
        cfg = self.trial_config(trial)
        saved = self.checkpoints.for_trial(trial) if self.checkpoints else None
        resume = saved.latest() if saved else None
        seed = resume.seed if resume else seed_of(trial, cfg.seed)
        set_attrs(
            trial,
            {
                **schedule_attrs(cfg),
                "seed": seed,
                "baseline": TrialRecord.of(trial).baseline,
                "resumed_from_trial": resume.trial_number if resume else None,
                "resumed_from_checkpoint": resume.phase if resume else None,
            },
        )
        task = self.workspace.task(cfg)
        net = self.build_net(cfg, task, seed)
        if resume is not None:
            return self.resume(trial, cfg, resume, saved, task, net)
        hp_attrs = self.head_probe(cfg, task, net, seed)
        set_attrs(trial, hp_attrs)
        gate(trial)
        if saved:  # after the gate: a retry never re-decides it
            saved.save(Checkpoint(trial.number, seed, hp_attrs, net=net.state_dict()))
        return self.finetune(trial, cfg, seed, hp_attrs, saved, task, net)

    def build_net(self, cfg: DictConfig, task: Task, seed: int) -> TransferNet:
        net = new_transfer_net(
            task.pretrained, cfg.backbone, cfg.head, task.input_dim, task.splits.n_classes, seed
        ).to(self.workspace.device)
        if task.pipeline.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    def head_probe(
        self, cfg: DictConfig, task: Task, net: TransferNet, seed: int
    ) -> dict[str, Any]:
        """HP on the copied part's outputs; the HP-phase user attrs (the gate's signals)."""
        ws = self.workspace
        start = time.perf_counter()
        outputs, how = ws.copied_outputs(cfg, task, net)
        features_s = time.perf_counter() - start
        start = time.perf_counter()
        hp = head_probe(
            net,
            outputs,
            task.splits.train.y,
            task.splits.val.y,
            cfg.hp,
            seed,
            int(cfg.data.eval_batch_size),
            ws.autocast,
            ws.progress,
        )
        return {
            "hp_features": how,
            "wall_features_s": features_s,
            "wall_hp_s": time.perf_counter() - start,
            "hp_epochs_run": hp.epochs_run,
            "hp_converged": hp.converged,
            "hp_stop_reason": hp.stop_reason,
            **({"tau": hp.epochs_run} if cfg.hp.until_converged else {}),
            "energy": hp.train.energy,
            "hp_train_acc": hp.train.accuracy,
            "hp_train_loss": hp.train.loss,
            "hp_val_acc": hp.val.accuracy,
            "head_norm": net.head_weight_norm(),
            "energy_curve": hp.energy_curve,
            "hp_train_acc_curve": hp.train_acc_curve,
        }

    def resume(
        self,
        trial: optuna.Trial,
        cfg: DictConfig,
        resume: Checkpoint,
        saved: TrialCheckpoints | None,
        task: Task,
        net: TransferNet,
    ) -> float:
        """Continue a failed trial from its newest checkpoint: HP is not run again, FT goes on
        from the epoch after the checkpoint's."""
        log.info(
            "trial %d resumes trial %d from its checkpoint %s",
            trial.number,
            resume.trial_number,
            resume.phase,
        )
        set_attrs(trial, resume.hp_attrs)
        if resume.net is not None:
            net.load_state_dict(resume.net)
        return self.finetune(trial, cfg, resume.seed, resume.hp_attrs, saved, task, net, resume)

    def finetune(
        self,
        trial: optuna.Trial,
        cfg: DictConfig,
        seed: int,
        hp_attrs: Mapping[str, Any],
        saved: TrialCheckpoints | None,
        task: Task,
        net: TransferNet,
        resume: Checkpoint | None = None,
    ) -> float:
        """FT with a checkpoint after every epoch, then the FT and adaptation attrs."""
        ws = self.workspace
        eval_bs = int(cfg.data.eval_batch_size)
        # The copied part is frozen during HP, so z0 is the same before and after HP.
        z0 = features(net, task.splits.val, task.pipeline, eval_bs)
        tuner = self._finetuner(trial, cfg, seed, task, net, resume)
        resumed_from = tuner.epoch

        prunable = not is_confirmation(trial)  # a confirmation runs to the end, whatever its curve

        def on_epoch(epoch: int, acc: float) -> None:
            judge_epoch(trial, epoch, acc, tuner.val_acc_curve, resumed_from, prunable)
            if saved:
                saved.save(
                    Checkpoint(
                        trial.number,
                        seed,
                        dict(hp_attrs),
                        finetuner=tuner.state_dict(),
                        ft_epoch=epoch,
                    )
                )

        result = tuner.run(on_epoch, ws.progress)
        val_acc = (
            result.val_acc_curve[-1]
            if result.val_acc_curve
            else accuracy(net, task.splits.val, task.pipeline, eval_bs, ws.autocast)
        )
        adapt = feature_adaptation(z0, features(net, task.splits.val, task.pipeline, eval_bs))
        set_attrs(
            trial,
            {
                "ft_resumed_from_epoch": resumed_from,
                "ft_epochs_run": result.epochs_run,
                "ft_val_acc_curve": result.val_acc_curve,
                "ft_val_acc": val_acc,
                "wall_ft_s": result.seconds,
                "test_acc": accuracy(net, task.splits.test, task.pipeline, eval_bs, ws.autocast),
                "adaptation_l2": adapt.l2,
                "adaptation_cos": adapt.cos,
                "adaptation_dot": adapt.dot,
                "feature_norm_T": adapt.norm_T,
                "feature_norm_0": adapt.norm_0,
            },
        )
        return val_acc

    def _finetuner(
        self,
        trial: optuna.Trial,
        cfg: DictConfig,
        seed: int,
        task: Task,
        net: TransferNet,
        resume: Checkpoint | None,
    ) -> Finetuner:
        """The trial's FT loop, at the epoch its checkpoint reached when it resumes (the retry
        reports the curve so far again, so it shows the whole curve)."""
        tuner = Finetuner(
            net,
            task.splits.train,
            task.splits.val,
            task.pipeline,
            cfg.ft,
            seed,
            int(cfg.data.eval_batch_size),
            self.workspace.autocast,
        )
        if resume is not None and resume.finetuner is not None:
            tuner.load_state_dict(resume.finetuner)
            for step, acc in enumerate(tuner.val_acc_curve, start=1):
                trial.report(acc, step=step)
        return tuner
