"""Backbone families: torchvision ResNets, timm models, Hugging Face vision encoders and your own
module, each cut into stages, with its feature convention and its input spec.

A family is chosen by ``backbone._target_`` (conf/backbone/{torchvision,timm,hf}.yaml); any other
``_target_`` is a user's factory, called as ``fn(**backbone.kwargs)``, returning a module that
follows the protocol below. Without ``_target_`` the original backbones (``arch`` = linear, mlp,
resnet18/34/50) are built by ``hpsearch.models`` exactly as before.

The protocol (what every family's backbone is turned into, ``StagedBackbone``):

- ``stages``: an ``nn.ModuleList`` applied in order, image batch (N, 3, H, W) in;
  ``layers_copied`` = k keeps stages[:k] pretrained and re-initialises stages[k:];
- ``pool(h)`` (optional): the features z of a stage's output as (N, D); default: the spatial mean
  of a (N, C, H, W) map, the mean over tokens of (N, T, D), (N, D) as is;
- ``input_spec`` (optional): ``{"input_size": int, "mean": [3], "std": [3], "interpolation":
  "bilinear" | "bicubic" | "nearest"}``, the preprocessing its weights expect;
- ``conv`` (optional, default false): true for a conv net (channels_last inputs help it).

Features z per family: conv nets (ResNet, ConvNeXt, EfficientNet) the spatial mean of the last
copied stage; ViTs the CLS token (timm ``global_pool='token'``, HF ViT and DINOv2), or the mean of
the patch tokens for a timm ViT built with ``global_pool='avg'``; no pooler layer is ever used, so
z never passes through randomly initialised weights.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib
import inspect
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from hpsearch.config import INTERPOLATIONS, backbone_stage_count
from hpsearch.errors import HpsearchError
from hpsearch.models import (
    Pretrained,
    TransferNet,
    _imagenet_backbone,
    backbone_stages,
    build_head,
    build_transfer_net,
    fit_state_dict,
    load_pretrained,
    read_state_dict,
)

log = logging.getLogger(__name__)

TIMM = "hpsearch.backbones.timm_backbone"
HF = "hpsearch.backbones.hf_backbone"
TORCHVISION = "hpsearch.backbones.torchvision_backbone"
DOWNLOAD_WORDS = ("imagenet", "hub")  # the model's own pretrained weights, downloaded if needed
POOLS = ("avg", "cls", "mean")
# PIL resample codes in Hugging Face image processor configs
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
_PROBE_BATCH = 2  # images in the dry run that checks stages, widths and the input size


@dataclass(frozen=True)
class InputSpec:
    """The preprocessing a backbone's weights expect: resolution, normalisation, resize."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    source: str = "data config"

    def key(self) -> str:
        """What the feature cache key needs of it."""
        return f"{self.size}|{list(self.mean)}|{list(self.std)}|{self.interpolation}"


class FeaturePool(nn.Module):
    """z of a stage's output: ``avg`` spatial mean (tokens: their mean), ``cls`` the first token,
    ``mean`` the mean of the tokens after ``n_prefix`` class/register tokens. Half precision is
    lifted to float32; float64 stays."""

    def __init__(self, kind: str = "avg", n_prefix: int = 0) -> None:
        super().__init__()
        self.kind, self.n_prefix = kind, n_prefix

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dtype not in (torch.float32, torch.float64):
            h = h.float()
        if h.dim() == 4:
            return h.mean(dim=(2, 3))
        if h.dim() == 3:
            if self.kind == "cls":
                return h[:, 0]
            return h[:, self.n_prefix :].mean(dim=1) if self.kind == "mean" else h.mean(dim=1)
        return h

    def extra_repr(self) -> str:
        return f"kind={self.kind}, n_prefix={self.n_prefix}"


class _FirstOutput(nn.Module):
    """A Hugging Face block or embedding: the hidden states of its (tuple) output."""

    def __init__(self, module: nn.Module, **call_kwargs: Any) -> None:
        super().__init__()
        self.module, self.call_kwargs = module, call_kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x, **self.call_kwargs)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return getattr(out, "last_hidden_state", out)


class _TimmViTTokens(nn.Module):
    """A timm ViT without its blocks and norm: patch embedding, class token, position embedding."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(x)


class StagedBackbone(nn.Module):
    """A backbone of any family as stages + its pooling convention + its input spec."""

    def __init__(
        self,
        stages: Sequence[nn.Module],
        pool: nn.Module,
        *,
        label: str,
        stage_names: Sequence[str],
        conv: bool,
        spec: InputSpec | None = None,
        fresh: Callable[[], StagedBackbone] | None = None,
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.pool = pool
        self.label = label
        self.stage_names = list(stage_names)
        self.conv = conv
        self.spec = spec
        self._fresh = fresh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def fresh(self) -> StagedBackbone:
        """The same architecture, randomly initialised by the current torch RNG."""
        if self._fresh is not None:
            return self._fresh()
        out = copy.deepcopy(self)
        for module in out.modules():
            if hasattr(module, "reset_parameters") and module is not out:
                module.reset_parameters()
        return out


def _group(blocks: Sequence[nn.Module], n_groups: int) -> list[list[nn.Module]]:
    """Blocks in ``n_groups`` consecutive groups as even as possible (at most one per block)."""
    n = max(1, min(n_groups, len(blocks)))
    size, extra = divmod(len(blocks), n)
    groups, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        groups.append(list(blocks[start:end]))
        start = end
    return groups


def _block_stages(
    blocks: Sequence[nn.Module], n_groups: int, tail: list[nn.Module], prefix: str
) -> tuple[list[nn.Module], list[str]]:
    groups = _group(blocks, n_groups)
    groups[-1] = groups[-1] + tail
    names, start = [], 0
    for g in groups:
        n_blocks = len(g) - (len(tail) if g is groups[-1] else 0)
        names.append(f"{prefix}{start}-{start + n_blocks - 1}")
        start += n_blocks
    return [nn.Sequential(*g) for g in groups], names


def _not_identity(module: Any) -> bool:
    return isinstance(module, nn.Module) and not isinstance(module, nn.Identity)


# --- timm ----------------------------------------------------------------------------------------


def _timm_stages(model: nn.Module, name: str, n_groups: int) -> dict[str, Any]:
    """Stages of a timm model: ResNets, ViTs, stem+stages nets (ConvNeXt, ...), EfficientNets."""
    m = model
    if all(hasattr(m, a) for a in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer4")):
        stem = nn.Sequential(m.conv1, m.bn1, m.act1, m.maxpool)
        layers = [m.layer1, m.layer2, m.layer3, m.layer4]
        names = ["stem", "layer1", "layer2", "layer3", "layer4"]
        return dict(stages=[stem, *layers], names=names, pool=FeaturePool("avg"), conv=True)
    if hasattr(m, "patch_embed") and hasattr(m, "blocks") and hasattr(m, "_pos_embed"):
        blocks, norm = list(m.blocks), m.norm
        if getattr(m, "global_pool", "token") not in ("token", "avg", ""):
            raise HpsearchError(
                f"backbone.name={name}: timm ViT with global_pool={m.global_pool!r} pools with "
                "weights of its own; pass backbone.kwargs.global_pool=token (CLS) or avg"
            )
        m.blocks, m.norm = nn.Sequential(), nn.Identity()
        for attr in ("fc_norm", "head_drop", "head", "attn_pool"):
            if hasattr(m, attr) and isinstance(getattr(m, attr), nn.Module):
                setattr(m, attr, nn.Identity())
        kind = "cls" if getattr(m, "global_pool", "token") == "token" else "mean"
        stages, names = _block_stages(blocks, n_groups, [norm], "blocks")
        return dict(
            stages=[_TimmViTTokens(m), *stages],
            names=["embed", *names],
            pool=FeaturePool(kind, int(getattr(m, "num_prefix_tokens", 1))),
            conv=False,
        )
    if hasattr(m, "stem") and isinstance(getattr(m, "stages", None), nn.Sequential):
        stages = list(m.stages)
        if _not_identity(getattr(m, "norm_pre", None)):
            stages[-1] = nn.Sequential(stages[-1], m.norm_pre)
        names = ["stem", *(f"stage{i + 1}" for i in range(len(stages)))]
        return dict(stages=[m.stem, *stages], names=names, pool=FeaturePool("avg"), conv=True)
    if hasattr(m, "conv_stem") and isinstance(getattr(m, "blocks", None), nn.Sequential):
        stem = nn.Sequential(m.conv_stem, m.bn1)
        stages = list(m.blocks)
        tail = [x for x in (getattr(m, "conv_head", None), getattr(m, "bn2", None)) if x]
        stages[-1] = nn.Sequential(stages[-1], *tail)
        names = ["stem", *(f"blocks{i}" for i in range(len(stages)))]
        return dict(stages=[stem, *stages], names=names, pool=FeaturePool("avg"), conv=True)
    raise HpsearchError(
        f"backbone.name={name}: timm's {type(m).__name__} has no stage mapping here (supported: "
        "ResNets, ViTs, stem+stages nets such as ConvNeXt, EfficientNets/MobileNets); wrap it in "
        "your own module with backbone._target_ (docs/configuration.md)"
    )


def _timm_check_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        raise HpsearchError(
            f"backbone.name={name!r} is not a timm model; closest: "
            + (", ".join(close) if close else "none (timm.list_models() lists them)")
        )


def _timm_spec(model: nn.Module, where: str) -> InputSpec:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    interp = str(cfg.get("interpolation", "bilinear"))
    return InputSpec(
        int(cfg["input_size"][-1]),
        tuple(float(v) for v in cfg["mean"]),
        tuple(float(v) for v in cfg["std"]),
        interp if interp in INTERPOLATIONS else "bilinear",
        where,
    )


def _timm_create(source: str, name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    try:
        return timm.create_model(source, pretrained=pretrained, num_classes=0, **kwargs)
    except TypeError as err:
        raise HpsearchError(
            f"backbone.kwargs={kwargs}: timm's {name} does not take them ({str(err)[:160]})"
        ) from None


def timm_backbone(bb: DictConfig, pretrained: bool) -> StagedBackbone:
    """A timm model by ``backbone.name``; weights: imagenet/hub (downloaded), none, a state_dict
    file, or a directory saved by timm (``config.json`` + weights, e.g. ``save_for_hf``)."""
    name = str(bb.name or "")
    _timm_check_name(name)
    kwargs = dict(OmegaConf.to_container(bb.kwargs, resolve=True))
    weights = str(bb.weights)
    spec = None
    source = name
    wdir = Path(weights).expanduser()
    if weights not in ("none", *DOWNLOAD_WORDS) and wdir.is_dir():
        config = wdir / "config.json"
        if not config.is_file():
            raise HpsearchError(
                f"backbone.weights={weights!r}: a directory without config.json; expected a "
                "timm model directory (config.json + model.safetensors) or a state_dict file"
            )
        arch = json.loads(config.read_text()).get("architecture")
        if arch != name:
            raise HpsearchError(
                f"backbone.weights={weights!r} holds a timm {arch}, not backbone.name={name}"
            )
        source = f"local-dir:{wdir.resolve()}"

    def build(with_weights: bool) -> nn.Module:
        if with_weights and weights in DOWNLOAD_WORDS:
            try:
                return _timm_create(name, name, True, kwargs)
            except HpsearchError:
                raise
            except Exception as err:
                raise HpsearchError(
                    f"backbone.weights={weights}: could not download timm's {name} weights "
                    f"({type(err).__name__}: {str(err).splitlines()[0][:120]}); offline, pass "
                    "backbone.weights=PATH (a state_dict file or a timm model directory)"
                ) from None
        return _timm_create(source, name, False, kwargs)

    def make(with_weights: bool) -> StagedBackbone:
        model = build(with_weights)
        nonlocal spec
        if with_weights and weights in DOWNLOAD_WORDS:
            spec = _timm_spec(model, f"timm {name} pretrained_cfg")
        elif with_weights and weights != "none":
            path = wdir if not wdir.is_dir() else _weights_file(wdir)
            state = _drop_classifier(model, read_state_dict(path, weights))
            fit_state_dict(model, state, weights, f"timm {name}")
            if wdir.is_dir():
                spec = _timm_spec(model, f"{wdir}/config.json")
        parts = _timm_stages(model, name, int(bb.block_stages))
        return StagedBackbone(
            parts["stages"],
            parts["pool"],
            label=f"timm:{name}",
            stage_names=parts["names"],
            conv=parts["conv"],
            spec=spec if with_weights else None,
            fresh=lambda: make(False),
        )

    return make(pretrained)


def _drop_classifier(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A source task's classifier (timm's ``pretrained_cfg['classifier']``) left out."""
    names = (getattr(model, "pretrained_cfg", {}) or {}).get("classifier") or ()
    prefixes = tuple(f"{n}." for n in ([names] if isinstance(names, str) else names))
    own = model.state_dict()
    return {k: v for k, v in state.items() if k in own or not k.startswith(prefixes)}


def _weights_file(directory: Path) -> Path:
    for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        if (directory / fname).is_file():
            return directory / fname
    raise HpsearchError(
        f"backbone.weights={str(directory)!r}: no model.safetensors or pytorch_model.bin in it"
    )


# --- Hugging Face --------------------------------------------------------------------------------


def _hf_config(name: str) -> Any:
    from transformers import AutoConfig

    path = Path(name).expanduser()
    looks_local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local:
        if not path.is_dir():
            raise HpsearchError(f"backbone.name={name!r}: no such directory")
        if not (path / "config.json").is_file():
            raise HpsearchError(
                f"backbone.name={name!r} is not a Hugging Face model directory (no config.json; "
                "save one with model.save_pretrained(DIR))"
            )
    try:
        return AutoConfig.from_pretrained(str(path) if looks_local else name)
    except Exception as err:
        if looks_local:
            raise HpsearchError(
                f"backbone.name={name!r} is not a Hugging Face model directory "
                f"({type(err).__name__}: {str(err).splitlines()[0][:140]})"
            ) from None
        raise HpsearchError(
            f"backbone.name={name!r}: could not fetch it from the Hugging Face hub "
            f"({type(err).__name__}: {str(err).splitlines()[0][:120]}); offline, pass "
            "backbone.name=DIR (a directory saved with save_pretrained)"
        ) from None


def _find(model: nn.Module, paths: Sequence[str]) -> Any:
    for path in paths:
        node: Any = model
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if node is not None:
            return node
    return None


def _hf_spec(name: str, where: str) -> InputSpec | None:
    """The image processor config of a local directory or hub model, when it has one."""
    path = Path(name).expanduser() / "preprocessor_config.json"
    if not path.is_file() and Path(name).expanduser().is_dir():
        return None  # a local model without an image processor config
    if not path.is_file():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(name, "preprocessor_config.json"))
        except Exception:
            return None
    proc = json.loads(path.read_text())
    size = proc.get("crop_size") if proc.get("do_center_crop") else proc.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    if not size or "image_mean" not in proc:
        return None
    return InputSpec(
        int(size),
        tuple(float(v) for v in proc["image_mean"]),
        tuple(float(v) for v in proc["image_std"]),
        _PIL_RESAMPLE.get(int(proc.get("resample", 2)), "bilinear"),
        where,
    )


def _hf_stages(model: nn.Module, name: str, n_groups: int) -> dict[str, Any]:
    embed = getattr(model, "embeddings", None)
    blocks = _find(model, ("layers", "encoder.layer", "encoder.layers"))
    conv_stages = _find(model, ("encoder.stages",))
    norm = _find(model, ("layernorm", "layer_norm", "norm"))
    if embed is not None and isinstance(conv_stages, nn.ModuleList):
        names = ["embed", *(f"stage{i + 1}" for i in range(len(conv_stages)))]
        stages = [_FirstOutput(embed), *(_FirstOutput(s) for s in conv_stages)]
        return dict(stages=stages, names=names, pool=FeaturePool("avg"), conv=True)
    if embed is not None and isinstance(blocks, nn.ModuleList):
        params = inspect.signature(embed.forward).parameters
        extra = {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in params else {}
        first = inspect.signature(blocks[0].forward).parameters
        required = [
            p
            for p in list(first.values())[1:]
            if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
        ]
        if not required:
            tail = [norm] if isinstance(norm, nn.Module) else []
            stages, names = _block_stages(
                [_FirstOutput(b) for b in blocks], n_groups, tail, "layers"
            )
            return dict(
                stages=[_FirstOutput(embed, **extra), *stages],
                names=["embed", *names],
                pool=FeaturePool("cls"),
                conv=False,
            )
    raise HpsearchError(
        f"backbone.name={name}: Hugging Face {type(model).__name__} has no stage mapping here "
        "(supported: ViT-like encoders such as ViT and DINOv2, and ConvNeXt-like ones); wrap it "
        "in your own module with backbone._target_ (docs/configuration.md)"
    )


def hf_backbone(bb: DictConfig, pretrained: bool) -> StagedBackbone:
    """A Hugging Face vision encoder: ``backbone.name`` a local directory or hub id; weights:
    hub/imagenet (the name's own weights), none, a state_dict file or a model directory."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its load report lists the unused pooler as missing

    name = str(bb.name or "")
    if not name:
        raise HpsearchError("backbone.name is not set: backbone=hf needs backbone.name=DIR or ID")
    config = _hf_config(name)
    weights = str(bb.weights)

    def make(with_weights: bool) -> StagedBackbone:
        spec = None
        if with_weights and weights in DOWNLOAD_WORDS:
            try:
                model = AutoModel.from_pretrained(str(Path(name).expanduser()), config=config)
            except Exception as err:
                raise HpsearchError(
                    f"backbone.weights={weights}: could not load {name}'s weights "
                    f"({type(err).__name__}: {str(err).splitlines()[0][:120]}); offline, pass "
                    "backbone.name=DIR or backbone.weights=PATH"
                ) from None
            spec = _hf_spec(name, f"{name} image processor config")
        else:
            model = AutoModel.from_config(config)
            if with_weights and weights != "none":
                path = Path(weights).expanduser()
                if path.is_dir():
                    _hf_config(str(path))  # a model directory, or one line saying it is not
                    path = _weights_file(path)
                state = read_state_dict(path, weights)
                prefix = f"{getattr(model, 'base_model_prefix', '')}."
                state = {k.removeprefix(prefix): v for k, v in state.items()}
                own = set(model.state_dict())
                heads = ("classifier.", "head.", "pooler.")  # a source task's, not the encoder
                state = {k: v for k, v in state.items() if k in own or not k.startswith(heads)}
                fit_state_dict(
                    model, state, weights, f"HF {type(model).__name__}", optional=("pooler.",)
                )
        model.eval()
        parts = _hf_stages(model, name, int(bb.block_stages))
        return StagedBackbone(
            parts["stages"],
            parts["pool"],
            label=f"hf:{name}",
            stage_names=parts["names"],
            conv=parts["conv"],
            spec=spec,
            fresh=lambda: make(False),
        )

    return make(pretrained)


# --- torchvision and a user's module -------------------------------------------------------------


def torchvision_backbone(bb: DictConfig, pretrained: bool) -> StagedBackbone:
    """torchvision's ResNets (``backbone.name`` resnet18/34/50), as ``backbone=resnet18``."""
    import torchvision

    name = str(bb.name or "")
    if name not in ("resnet18", "resnet34", "resnet50"):
        close = difflib.get_close_matches(name, ["resnet18", "resnet34", "resnet50"], n=3)
        raise HpsearchError(
            f"backbone.name={name!r} is invalid for backbone=torchvision: must be one of "
            f"resnet18, resnet34, resnet50{' (closest: ' + ', '.join(close) + ')' if close else ''}"
        )
    weights = str(bb.weights)
    if pretrained and weights in DOWNLOAD_WORDS:
        model = _imagenet_backbone(name)
    else:
        model = getattr(torchvision.models, name)(weights=None)
        if pretrained and weights != "none":
            state = read_state_dict(Path(weights).expanduser(), weights)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            fit_state_dict(model, state, weights, name, optional=("fc.",))
    return StagedBackbone(
        backbone_stages(model),
        FeaturePool("avg"),
        label=f"torchvision:{name}",
        stage_names=["stem", "layer1", "layer2", "layer3", "layer4"],
        conv=True,
        fresh=lambda: torchvision_backbone(bb, False),
    )


BUILTIN = {TIMM: timm_backbone, HF: hf_backbone, TORCHVISION: torchvision_backbone}


def _locate(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except Exception as err:
        raise HpsearchError(
            f"backbone._target_={target!r}: cannot import it ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:120]}); expected a module.function on the Python path"
        ) from None
    if not callable(fn):
        raise HpsearchError(f"backbone._target_={target!r} is not callable")
    return fn


def _protocol_error(target: str, what: str) -> HpsearchError:
    return HpsearchError(
        f"backbone._target_={target}: the module it returned breaks the backbone protocol: "
        f"{what} (docs/configuration.md, 'Your own backbone')"
    )


def custom_backbone(target: str, bb: DictConfig, pretrained: bool) -> StagedBackbone:
    """A user's module from ``fn(**backbone.kwargs)``: stages, optional pool/input_spec/conv."""
    fn = _locate(target)
    kwargs = dict(OmegaConf.to_container(bb.kwargs, resolve=True))
    try:
        module = fn(**kwargs)
    except Exception as err:
        raise HpsearchError(
            f"backbone._target_={target}: calling it with backbone.kwargs={kwargs} failed "
            f"({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})"
        ) from None
    if not isinstance(module, nn.Module):
        raise _protocol_error(target, f"it returned a {type(module).__name__}, not an nn.Module")
    stages = getattr(module, "stages", None)
    if not isinstance(stages, nn.ModuleList) or len(stages) == 0:
        raise _protocol_error(target, "no `stages` (a non-empty nn.ModuleList, forward order)")
    pool = getattr(module, "pool", None)
    if pool is not None and not callable(pool):
        raise _protocol_error(target, "`pool` is not callable (h -> (N, D) features)")
    spec = _custom_spec(target, getattr(module, "input_spec", None))
    weights = str(bb.weights)
    if pretrained and weights in DOWNLOAD_WORDS:
        raise HpsearchError(
            f"backbone.weights={weights}: your own backbone loads its pretrained weights in "
            f"{target} itself (weights=none) or from backbone.weights=PATH (a state_dict)"
        )
    if pretrained and weights != "none":
        fit_state_dict(
            module, read_state_dict(Path(weights).expanduser(), weights), weights, target
        )
    pool_module = pool if isinstance(pool, nn.Module) else (_CallPool(pool) if pool else None)
    staged = StagedBackbone(
        list(stages),
        pool_module or FeaturePool("avg"),
        label=f"custom:{target}",
        stage_names=[f"stage{i}" for i in range(len(stages))],
        conv=bool(getattr(module, "conv", False)),
        spec=spec,
    )
    staged._owner = [module]  # keeps the user's module (and any state its stages share) alive
    return staged


class _CallPool(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fn(h)


def _custom_spec(target: str, spec: Any) -> InputSpec | None:
    if spec is None:
        return None
    try:
        mean = tuple(float(v) for v in spec["mean"])
        std = tuple(float(v) for v in spec["std"])
        size = int(spec["input_size"])
        interp = str(spec.get("interpolation", "bilinear"))
    except Exception:
        raise _protocol_error(
            target, "`input_spec` must be a mapping with input_size, mean[3], std[3]"
        ) from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or size < 1 or interp not in INTERPOLATIONS:
        raise _protocol_error(
            target,
            "`input_spec` needs input_size >= 1, 3 means, 3 positive stds and interpolation "
            "one of " + ", ".join(INTERPOLATIONS),
        )
    return InputSpec(size, mean, std, interp, f"{target}.input_spec")


# --- building, checking, the trial's network -----------------------------------------------------


def is_staged(bb: DictConfig) -> bool:
    """Whether ``backbone`` is built by a family (``_target_``) rather than by ``arch``."""
    return bool(bb.get("_target_"))


def build_staged(bb: DictConfig, pretrained: bool) -> StagedBackbone:
    target = str(bb._target_)
    if target in BUILTIN:
        return BUILTIN[target](bb, pretrained)
    return custom_backbone(target, bb, pretrained)


def resolve_input_spec(bb: DictConfig, data: DictConfig, model_spec: InputSpec | None) -> InputSpec:
    """``backbone.input_size/mean/std/interpolation`` when set, else the weights' own spec,
    else the data config's (random init or a bare state_dict carry no preprocessing)."""
    base = model_spec or InputSpec(
        int(data.image_size),
        tuple(float(v) for v in data.mean),
        tuple(float(v) for v in data.std),
        "bilinear",
        "data config",
    )
    overridden = [k for k in ("input_size", "mean", "std", "interpolation") if bb.get(k)]
    if not overridden:
        return base
    return InputSpec(
        int(bb.input_size) if bb.get("input_size") else base.size,
        tuple(float(v) for v in bb.mean) if bb.get("mean") else base.mean,
        tuple(float(v) for v in bb.std) if bb.get("std") else base.std,
        str(bb.interpolation) if bb.get("interpolation") else base.interpolation,
        f"{base.source}, backbone.{'/'.join(overridden)} from the config",
    )


@torch.no_grad()
def probe_widths(staged: StagedBackbone, spec: InputSpec, target: str) -> list[int]:
    """Dry run at the input size: the pooled width after each number of copied stages (index k:
    k stages; 0: the input's 3 channels). An input size the model cannot take fails here."""
    x = torch.rand(_PROBE_BATCH, 3, spec.size, spec.size)
    widths = [3]
    was_training = staged.training
    staged.eval()
    try:
        for i, stage in enumerate(staged.stages):
            try:
                x = stage(x)
            except Exception as err:
                raise HpsearchError(
                    f"backbone {staged.label} cannot take {spec.size}x{spec.size} inputs "
                    f"(input size from {spec.source}; stage {staged.stage_names[i]}: "
                    f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})"
                    "; set backbone.input_size=N to one it accepts"
                ) from None
            if not isinstance(x, torch.Tensor):
                raise _protocol_error(target, f"stage {i} returned a {type(x).__name__}")
            z = staged.pool(x)
            if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] != _PROBE_BATCH:
                raise _protocol_error(
                    target,
                    f"pool(stage {i} output {tuple(x.shape)}) gave "
                    f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}, "
                    "expected (N, D)",
                )
            widths.append(int(z.shape[1]))
    finally:
        staged.train(was_training)
    return widths


def check_layers_copied(
    k: int, staged: StagedBackbone, key: str = "backbone.layers_copied"
) -> None:
    n = len(staged.stages)
    if not 0 <= k <= n:
        raise HpsearchError(
            f"{key}={k} is invalid: must be in [0, {n}] for {staged.label} (stages: "
            f"{', '.join(staged.stage_names)})"
        )


def weights_digest(staged: StagedBackbone) -> str:
    """Hash of all the backbone's tensors: what its ``description`` names."""
    digest = hashlib.sha1()
    for name, tensor in staged.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def load_backbone(
    bb: DictConfig, data: DictConfig, input_dim: int, seed: int, source_trainer=None
) -> Pretrained:
    """The pretrained backbone for ``backbone``: a family's (checked: stages, layers_copied,
    input size) or the original ``arch`` path of ``hpsearch.models``."""
    if not is_staged(bb):
        return load_pretrained(bb, input_dim, seed, source_trainer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        staged = build_staged(bb, pretrained=True)
    check_layers_copied(int(bb.layers_copied), staged)
    spec = resolve_input_spec(bb, data, staged.spec)
    staged.spec = spec
    staged.widths = probe_widths(staged, spec, str(bb._target_))
    staged.eval()
    description = (
        f"{staged.label}, weights={bb.weights} (sha1 {weights_digest(staged)}), "
        f"{len(staged.stages)} stages [{', '.join(staged.stage_names)}], "
        f"input {spec.size}px {spec.interpolation} mean {list(spec.mean)} std {list(spec.std)} "
        f"({spec.source})"
    )
    return Pretrained(staged, description)


def stage_count(bb: DictConfig) -> int:
    """The number of stages ``layers_copied`` counts, for any backbone (a family's is built
    randomly initialised, once per configuration)."""
    if not is_staged(bb):
        return backbone_stage_count(str(bb.arch), int(bb.mlp_depth))
    key = json.dumps(OmegaConf.to_container(bb, resolve=True), sort_keys=True, default=str)
    if key not in _STAGE_COUNTS:
        with torch.random.fork_rng(devices=[]):
            _STAGE_COUNTS[key] = len(build_staged(bb, pretrained=False).stages)
    return _STAGE_COUNTS[key]


_STAGE_COUNTS: dict[str, int] = {}


def new_transfer_net(
    pretrained: Pretrained,
    bb: DictConfig,
    head_cfg: DictConfig,
    input_dim: int,
    n_classes: int,
    seed: int,
) -> TransferNet:
    """The trial's network: pretrained copied stages, seeded fresh upper stages and head."""
    staged = pretrained.model
    if not isinstance(staged, StagedBackbone):
        return build_transfer_net(pretrained, bb, head_cfg, input_dim, n_classes, seed)
    k = int(bb.layers_copied)
    check_layers_copied(k, staged)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = staged.fresh()
        head = build_head(staged.widths[-1], n_classes, int(head_cfg.depth), int(head_cfg.hidden))
    copied = [copy.deepcopy(s) for s in staged.stages[:k]]
    return TransferNet(copied, list(fresh.stages[k:]), head, pool=copy.deepcopy(staged.pool))
