"""What the trials of one worker share: datasets on the device, pretrained backbones, the
feature cache, and the copied part's outputs for HP."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from hpsearch.backbones import StagedBackbone, check_layers_copied, load_backbone
from hpsearch.config import channels_last_choice
from hpsearch.data import (
    CachedOutputs,
    FeatureCache,
    FrozenOutputs,
    InputPipeline,
    Split,
    Splits,
    load_splits,
)
from hpsearch.data.toy import pretrain_source_backbone
from hpsearch.errors import HpsearchError
from hpsearch.models import Pretrained, TransferNet

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HpsearchError(f"device={name!r}: CUDA is not available here; use device=cpu or auto")
    return torch.device(name)


def use_channels_last(setting: str, conv: bool) -> bool:
    """Whether a trial's network and inputs use the channels_last memory layout.

    ``auto``: for conv nets, on every device — on CUDA, and on the CPU too (oneDNN): a ResNet-18
    FT epoch at 32x32 took 1.08x less CPU time, an evaluation pass 1.19x (benchmarks/pipeline.py
    compares the layouts side by side). Vector backbones have no channels. ``true``/``false``
    force the layout of a conv net; results agree up to rounding (tests/trial/test_layout.py).
    """
    choice = channels_last_choice(setting)
    return conv and choice in ("auto", "true")


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
            s = load_splits(data_cfg, self.cache_dir, self.progress)
            move = lambda sp: Split(sp.x.to(self.device), sp.y.to(self.device))
            self._splits[key] = Splits(
                move(s.train), move(s.val), move(s.test), s.classes, s.kind, s.fingerprint
            )
        return self._splits[key]

    def pretrained(self, cfg: DictConfig) -> Pretrained:
        bb = OmegaConf.to_container(cfg.backbone, resolve=True)
        bb.pop("layers_copied")
        key = json.dumps(
            [bb, _key(cfg.data) if cfg.backbone.weights == "source" else None, int(cfg.seed)],
            sort_keys=True,
        )
        if key not in self._pretrained:
            input_dim = self.input_dim(cfg)
            self._pretrained[key] = load_backbone(
                cfg.backbone,
                cfg.data,
                input_dim,
                seed=int(cfg.seed),
                source_trainer=lambda: pretrain_source_backbone(cfg.data, cfg.backbone),
            )
        return self._pretrained[key]

    @staticmethod
    def input_dim(cfg: DictConfig) -> int:
        return int(cfg.data.synthetic.input_dim) if cfg.data.format == "synthetic" else 3

    def task(self, cfg: DictConfig) -> Task:
        splits = self.splits(cfg.data)
        pretrained = self.pretrained(cfg)
        staged = pretrained.model if isinstance(pretrained.model, StagedBackbone) else None
        conv = staged.conv if staged else cfg.backbone.arch.startswith("resnet")
        pipeline = InputPipeline(
            cfg.data,
            splits.kind,
            self.device,
            channels_last=use_channels_last(cfg.channels_last, conv),
            spec=staged.spec if staged else None,
        )
        return Task(splits, pipeline, pretrained, self.input_dim(cfg), conv)

    def check_backbones(self, cfg: DictConfig, distributions: dict) -> None:
        """Before a study is touched: every backbone the study can pick (each choice of a
        categorical ``backbone.name``) loads, takes its input size, and has the stages that the
        search space's ``backbone.layers_copied`` may copy."""
        from hpsearch.space import apply_params

        names = distributions.get("backbone.name")
        configs = [cfg] + [
            apply_params(cfg, {"backbone.name": n}) for n in getattr(names, "choices", ())
        ]
        copied = distributions.get("backbone.layers_copied")
        highest = None
        if copied is not None:
            highest = int(max(getattr(copied, "choices", None) or [copied.high]))
        for one in configs:
            model = self.pretrained(one).model
            if isinstance(model, StagedBackbone) and highest is not None:
                check_layers_copied(highest, model, "search_space.backbone.layers_copied: high")

    def copied_outputs(self, cfg: DictConfig, task: Task, net: TransferNet):
        """HP's source of copied-part outputs: the on-disk cache, or the frozen part per batch."""
        hp = cfg.hp
        if hp.augment or not hp.feature_cache:
            return FrozenOutputs(
                net.copied, task.splits, task.pipeline, bool(hp.augment), self.autocast
            ), "frozen"
        size = FeatureCache.estimated_bytes(net.copied, task.splits, task.pipeline)
        if size > float(hp.cache_max_gb) * 2**30:
            log.info(
                "feature cache would take %.1f GB > hp.cache_max_gb=%s: HP runs through the "
                "frozen part",
                size / 2**30,
                hp.cache_max_gb,
            )
            return FrozenOutputs(
                net.copied, task.splits, task.pipeline, False, self.autocast
            ), "frozen"
        k = int(cfg.backbone.layers_copied)
        model = task.pretrained.model
        key = self.feature_cache.key(
            task.pretrained.copied_fingerprint(k),
            k,
            task.splits,
            int(cfg.data.image_size),
            # a family's model, its input size, normalisation and resize (weights: fingerprint)
            f"{model.label}|{model.spec.key()}"
            if isinstance(model, StagedBackbone)
            else str(cfg.backbone.arch),
        )
        outputs, from_disk = self.feature_cache.load_or_compute(
            key,
            net.copied,
            task.splits,
            task.pipeline,
            int(cfg.data.eval_batch_size),
            self.autocast,
            self.progress,
        )
        return CachedOutputs(outputs, self.device), "cache-disk" if from_disk else "cache"
