"""One trial: head probing -> energy and HP metrics -> pruning gate -> finetuning -> adaptation.

``Workspace`` holds what every trial of a worker shares (datasets on the device, pretrained
backbones, the feature cache); ``Objective`` is what ``study.optimize`` calls. Every metric is a
trial user attr with a self-explaining name (see ``METRICS``), so optuna-dashboard and the
reports read them directly; FT validation accuracy per epoch is the trial's intermediate values.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

import optuna
import torch
from omegaconf import DictConfig, OmegaConf

from hpsearch.checkpoint import Checkpoint, CheckpointStore, TrialCheckpoints
from hpsearch.config import validate_config
from hpsearch.data import Splits, Split, load_splits
from hpsearch.features import CachedOutputs, FeatureCache, FrozenOutputs
from hpsearch.finetune import Finetuner, accuracy, features
from hpsearch.inputs import InputPipeline
from hpsearch.metrics import feature_adaptation
from hpsearch.models import Pretrained, TransferNet, build_transfer_net, load_pretrained
from hpsearch.probing import head_probe
from hpsearch.pruners import EnergyPruner
from hpsearch.schedules import configure_trial
from hpsearch.space import apply_params, suggest
from hpsearch.toy import pretrain_source_backbone

log = logging.getLogger(__name__)

# user attr -> meaning; the README's metric reference is generated from the same words.
METRICS = {
    "schedule": "the named schedule the trial ran (conf/schedule/; none: the search space decides)",
    "baseline": "true on a trial enqueued by study.baselines, false otherwise",
    "tau": "HP epochs τ of this trial (the epochs HP ran when it ran until converged)",
    "hp_until_converged": "whether HP ran until converged (capped by hp.max_epochs) instead of τ",
    "hp_converged": "whether the convergence rule held at the end of HP",
    "hp_stop_reason": "why HP stopped: tau, converged or max_epochs",
    "label_smoothing": "ε used in HP",
    "head_depth": "linear layers in the head",
    "layers_copied": "backbone stages that kept pretrained weights",
    "hp_lr": "HP learning rate",
    "ft_lr": "FT learning rate",
    "seed": "the trial's seed (head init, batch order, augmentation)",
    "hp_features": "how HP got the copied part's outputs: cache, cache-disk or frozen",
    "hp_epochs_run": "HP epochs actually run",
    "energy": "mean ||e_y - q_0||_2 on the train split at the start of FT",
    "hp_train_acc": "train accuracy at the end of HP (eval mode, no augmentation)",
    "hp_train_loss": "train cross-entropy (unsmoothed) at the end of HP",
    "hp_val_acc": "validation accuracy at the end of HP",
    "head_norm": "Frobenius norm of the head's last weight matrix after HP",
    "energy_curve": "energy after 0, 1, ..., τ HP epochs",
    "hp_train_acc_curve": "train accuracy after 0, 1, ..., τ HP epochs",
    "ft_epochs_run": "FT epochs this trial actually ran",
    "ft_resumed_from_epoch": "FT epochs done before this trial started (0 unless it resumed)",
    "resumed_from_trial": "the failed trial whose checkpoint this retry continued (null: fresh)",
    "resumed_from_checkpoint": "where it continued: hp (after HP), ft_epoch_N, or null",
    "ft_val_acc_curve": "validation accuracy after each FT epoch",
    "ft_val_acc": "validation accuracy after FT (the objective)",
    "test_acc": "test accuracy after FT (recorded, never used to select)",
    "adaptation_l2": "mean ||z_T - z_0||_2 on the validation split",
    "adaptation_cos": "mean cos(z_T, z_0)",
    "adaptation_dot": "mean z_T . z_0",
    "feature_norm_T": "mean ||z_T||",
    "feature_norm_0": "mean ||z_0||",
    "wall_features_s": "seconds to get the copied part's outputs",
    "wall_hp_s": "seconds of HP",
    "wall_ft_s": "seconds of FT",
    "pruned_at": "where a pruned trial stopped: gate (before FT) or ft_epoch_N",
}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from hpsearch.errors import HpsearchError

        raise HpsearchError(f"device={name!r}: CUDA is not available here; use device=cpu or auto")
    return torch.device(name)


def trial_seed(study_seed: int, number: int) -> int:
    return (int(study_seed) * 1_000_003 + int(number)) % (2**31 - 1)


def _key(node: DictConfig) -> str:
    return json.dumps(OmegaConf.to_container(node, resolve=True), sort_keys=True)


@dataclass
class Task:
    """A dataset on the training device and the pretrained backbone for it."""

    splits: Splits  # tensors on the device
    pipeline: InputPipeline
    pretrained: Pretrained
    input_dim: int
    conv: bool


class Workspace:
    """What the trials of one worker share; everything is loaded on first use and kept."""

    def __init__(self, cfg: DictConfig) -> None:
        self.device = resolve_device(str(cfg.device))
        self.cache_dir = str(cfg.storage.cache_dir)
        self.feature_cache = FeatureCache(self.cache_dir)
        self.progress = bool(cfg.progress)
        self._splits: dict[str, Splits] = {}
        self._pretrained: dict[str, Pretrained] = {}

    @property
    def autocast(self) -> bool:
        return self.device.type == "cuda"

    def splits(self, data_cfg: DictConfig) -> Splits:
        key = _key(data_cfg)
        if key not in self._splits:
            s = load_splits(data_cfg, self.cache_dir)
            move = lambda sp: Split(sp.x.to(self.device), sp.y.to(self.device))
            self._splits[key] = Splits(move(s.train), move(s.val), move(s.test), s.classes,
                                       s.kind, s.fingerprint)
        return self._splits[key]

    def pretrained(self, cfg: DictConfig) -> Pretrained:
        bb = OmegaConf.to_container(cfg.backbone, resolve=True)
        bb.pop("layers_copied")  # type: ignore[union-attr]
        key = json.dumps([bb, _key(cfg.data) if cfg.backbone.weights == "source" else None,
                          int(cfg.seed)], sort_keys=True)
        if key not in self._pretrained:
            input_dim = self.input_dim(cfg)
            self._pretrained[key] = load_pretrained(
                cfg.backbone, input_dim, seed=int(cfg.seed),
                source_trainer=lambda: pretrain_source_backbone(cfg.data, cfg.backbone))
        return self._pretrained[key]

    @staticmethod
    def input_dim(cfg: DictConfig) -> int:
        return int(cfg.data.synthetic.input_dim) if cfg.data.format == "synthetic" else 3

    def task(self, cfg: DictConfig) -> Task:
        splits = self.splits(cfg.data)
        conv = cfg.backbone.arch.startswith("resnet")
        pipeline = InputPipeline(cfg.data, splits.kind, self.device,
                                 channels_last=conv and self.device.type == "cuda")
        return Task(splits, pipeline, self.pretrained(cfg), self.input_dim(cfg), conv)

    def copied_outputs(self, cfg: DictConfig, task: Task, net: TransferNet):
        """HP's source of copied-part outputs: the on-disk cache, or the frozen part per batch."""
        hp = cfg.hp
        if hp.augment or not hp.feature_cache:
            return FrozenOutputs(net.copied, task.splits, task.pipeline, bool(hp.augment),
                                 self.autocast), "frozen"
        size = FeatureCache.estimated_bytes(net.copied, task.splits, task.pipeline)
        if size > float(hp.cache_max_gb) * 2**30:
            log.info("feature cache would take %.1f GB > hp.cache_max_gb=%s: HP runs through the "
                     "frozen part", size / 2**30, hp.cache_max_gb)
            return FrozenOutputs(net.copied, task.splits, task.pipeline, False,
                                 self.autocast), "frozen"
        k = int(cfg.backbone.layers_copied)
        key = self.feature_cache.key(task.pretrained.copied_fingerprint(k), k, task.splits,
                                     int(cfg.data.image_size), str(cfg.backbone.arch))
        outputs, from_disk = self.feature_cache.load_or_compute(
            key, net.copied, task.splits, task.pipeline, int(cfg.data.eval_batch_size),
            self.autocast, self.progress)
        return CachedOutputs(outputs, self.device), "cache-disk" if from_disk else "cache"


def schedule_attrs(cfg: DictConfig) -> dict[str, Any]:
    return {"schedule": str(cfg.schedule.name), "tau": int(cfg.hp.epochs),
            "hp_until_converged": bool(cfg.hp.until_converged),
            "label_smoothing": float(cfg.hp.label_smoothing),
            "head_depth": int(cfg.head.depth), "layers_copied": int(cfg.backbone.layers_copied),
            "hp_lr": float(cfg.hp.lr), "ft_lr": float(cfg.ft.lr)}


def set_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


class Objective:
    """``study.optimize`` target: runs one trial and returns its final validation accuracy."""

    def __init__(self, cfg: DictConfig, distributions: Mapping[str, Any],
                 workspace: Workspace, checkpoints: CheckpointStore | None = None) -> None:
        self.cfg, self.distributions, self.workspace = cfg, distributions, workspace
        self.checkpoints = checkpoints  # None: no saving, no resuming

    def trial_config(self, trial: optuna.Trial) -> DictConfig:
        return configure_trial(trial, self.cfg, self.distributions)

    def __call__(self, trial: optuna.Trial) -> float:
        ws = self.workspace
        cfg = self.trial_config(trial)
        saved = self.checkpoints.for_trial(trial) if self.checkpoints else None
        resume = saved.latest() if saved else None
        seed = resume.seed if resume else trial_seed(cfg.seed, trial.number)
        set_attrs(trial, {**schedule_attrs(cfg), "seed": seed,
                          "baseline": bool(trial.user_attrs.get("baseline", False)),
                          "resumed_from_trial": resume.trial_number if resume else None,
                          "resumed_from_checkpoint": resume.phase if resume else None})
        task = ws.task(cfg)
        net = build_transfer_net(task.pretrained, cfg.backbone, cfg.head, task.input_dim,
                                 task.splits.n_classes, seed).to(ws.device)
        if task.pipeline.channels_last:
            net = net.to(memory_format=torch.channels_last)
        eval_bs = int(cfg.data.eval_batch_size)
        if resume is not None:
            return self.resume(trial, cfg, resume, saved, task, net)

        start = time.perf_counter()
        outputs, how = ws.copied_outputs(cfg, task, net)
        features_s = time.perf_counter() - start
        start = time.perf_counter()
        hp = head_probe(net, outputs, task.splits.train.y, task.splits.val.y, cfg.hp, seed,
                        eval_bs, ws.autocast, ws.progress)
        hp_attrs = {
            "hp_features": how, "wall_features_s": features_s,
            "wall_hp_s": time.perf_counter() - start, "hp_epochs_run": hp.epochs_run,
            "hp_converged": hp.converged, "hp_stop_reason": hp.stop_reason,
            **({"tau": hp.epochs_run} if cfg.hp.until_converged else {}),
            "energy": hp.train.energy, "hp_train_acc": hp.train.accuracy,
            "hp_train_loss": hp.train.loss, "hp_val_acc": hp.val.accuracy,
            "head_norm": net.head_weight_norm(), "energy_curve": hp.energy_curve,
            "hp_train_acc_curve": hp.train_acc_curve,
        }
        set_attrs(trial, hp_attrs)
        self.gate(trial)
        if saved:  # after the gate: a retry never re-decides it
            saved.save(Checkpoint(trial.number, seed, hp_attrs, net=net.state_dict()))
        return self.finetune(trial, cfg, seed, hp_attrs, saved, task, net)

    def resume(self, trial: optuna.Trial, cfg: DictConfig, resume: Checkpoint,
               saved: TrialCheckpoints | None, task: Task, net: TransferNet) -> float:
        """Continue a failed trial from its newest checkpoint: HP is not run again, FT goes on
        from the epoch after the checkpoint's."""
        log.info("trial %d resumes trial %d from its checkpoint %s", trial.number,
                 resume.trial_number, resume.phase)
        set_attrs(trial, resume.hp_attrs)
        if resume.net is not None:
            net.load_state_dict(resume.net)
        return self.finetune(trial, cfg, resume.seed, resume.hp_attrs, saved, task, net, resume)

    def finetune(self, trial: optuna.Trial, cfg: DictConfig, seed: int,
                 hp_attrs: Mapping[str, Any], saved: TrialCheckpoints | None, task: Task,
                 net: TransferNet,
                 resume: Checkpoint | None = None) -> float:
        """FT with a checkpoint after every epoch, then the FT and adaptation attrs."""
        ws = self.workspace
        eval_bs = int(cfg.data.eval_batch_size)
        # The copied part is frozen during HP, so z0 is the same before and after HP.
        z0 = features(net, task.splits.val, task.pipeline, eval_bs)
        tuner = Finetuner(net, task.splits.train, task.splits.val, task.pipeline, cfg.ft, seed,
                          eval_bs, ws.autocast)
        if resume is not None and resume.finetuner is not None:
            tuner.load_state_dict(resume.finetuner)
            for step, acc in enumerate(tuner.val_acc_curve, start=1):
                trial.report(acc, step=step)  # the retry shows the whole curve
        resumed_from = tuner.epoch
        trial.set_user_attr("ft_resumed_from_epoch", resumed_from)

        def on_epoch(epoch: int, acc: float) -> None:
            trial.report(acc, step=epoch)
            if trial.should_prune():
                set_attrs(trial, {"pruned_at": f"ft_epoch_{epoch}",
                                  "ft_epochs_run": epoch - resumed_from,
                                  "ft_val_acc_curve": list(tuner.val_acc_curve)})
                raise optuna.TrialPruned(f"pruned after FT epoch {epoch} (val acc {acc:.4f})")
            if saved:
                saved.save(Checkpoint(trial.number, seed, dict(hp_attrs),
                                      finetuner=tuner.state_dict(), ft_epoch=epoch))

        result = tuner.run(on_epoch, ws.progress)
        val_acc = (result.val_acc_curve[-1] if result.val_acc_curve
                   else accuracy(net, task.splits.val, task.pipeline, eval_bs, ws.autocast))
        adapt = feature_adaptation(z0, features(net, task.splits.val, task.pipeline, eval_bs))
        set_attrs(trial, {
            "ft_epochs_run": result.epochs_run, "ft_val_acc_curve": result.val_acc_curve,
            "ft_val_acc": val_acc, "wall_ft_s": result.seconds,
            "test_acc": accuracy(net, task.splits.test, task.pipeline, eval_bs, ws.autocast),
            "adaptation_l2": adapt.l2, "adaptation_cos": adapt.cos, "adaptation_dot": adapt.dot,
            "feature_norm_T": adapt.norm_T, "feature_norm_0": adapt.norm_0,
        })
        return val_acc

    def gate(self, trial: optuna.Trial) -> None:
        """The decision point between HP and FT: the study's pruner sees the HP signals (user
        attrs) before any FT step is reported. Pruners that only judge FT epochs (median,
        hyperband) have no reported step yet and keep the trial. The energy pruner's decision is
        recorded on the trial whatever it is; on NaN/inf signals it raises InvalidSignalError and
        the trial fails with that reason."""
        pruner = trial.study.pruner
        try:
            pruned = trial.should_prune()
        finally:
            decision = (pruner.take_decision(trial.number) if isinstance(pruner, EnergyPruner)
                        else None)
            if decision is not None:
                set_attrs(trial, decision.user_attrs())
        if pruned:
            set_attrs(trial, {"pruned_at": "gate", "ft_epochs_run": 0})
            raise optuna.TrialPruned(decision.reason if decision is not None
                                     else "pruned at the gate before FT")
