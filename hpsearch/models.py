"""Backbones cut into stages, task heads, and the network a trial trains.

A backbone is a list of stages (ResNet: stem, layer1 ... layer4; the toy: its linear layers).
``backbone.layers_copied`` = k: stages[:k] keep the pretrained weights (the *copied part*, frozen
during head probing), stages[k:] are re-initialised from the trial's seed and train with the head.
The features whose adaptation we measure are z = pooled output of the copied part.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from hpsearch.errors import HpsearchError

log = logging.getLogger(__name__)

RESNET_WIDTHS = {
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
}


class VectorBackbone(nn.Module):
    """The toy's backbone: ``depth`` linear stages; depth 1 without bias or ReLU is z = Wx."""

    def __init__(self, input_dim: int, width: int, depth: int, linear: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            fan_in = input_dim if i == 0 else width
            if linear:
                layers.append(nn.Linear(fan_in, width, bias=False))
            else:
                layers.append(nn.Sequential(nn.Linear(fan_in, width), nn.ReLU()))
        self.stages = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


def backbone_stages(model: nn.Module) -> list[nn.Module]:
    """The stages of a VectorBackbone, a family's StagedBackbone (``hpsearch.backbones``) or a
    torchvision ResNet, in forward order."""
    if isinstance(getattr(model, "stages", None), nn.ModuleList):
        return list(model.stages)
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    return [stem, model.layer1, model.layer2, model.layer3, model.layer4]


def new_backbone(bb_cfg: DictConfig, input_dim: int) -> nn.Module:
    """A freshly initialised backbone (the current torch RNG decides its weights)."""
    arch = bb_cfg.arch
    if arch in ("linear", "mlp"):
        depth = 1 if arch == "linear" else int(bb_cfg.mlp_depth)
        return VectorBackbone(input_dim, int(bb_cfg.feature_dim), depth, linear=arch == "linear")
    import torchvision

    return getattr(torchvision.models, arch)(weights=None)


def output_width(bb_cfg: DictConfig, input_dim: int, n_copied: int | None = None) -> int:
    """Width of the pooled output after ``n_copied`` stages (all stages when None)."""
    if bb_cfg.arch in ("linear", "mlp"):
        depth = 1 if bb_cfg.arch == "linear" else int(bb_cfg.mlp_depth)
        n = depth if n_copied is None else n_copied
        return input_dim if n == 0 else int(bb_cfg.feature_dim)
    widths = RESNET_WIDTHS[bb_cfg.arch]
    n = len(widths) if n_copied is None else n_copied
    return 3 if n == 0 else widths[n - 1]


def build_head(in_dim: int, n_classes: int, depth: int, hidden: int) -> nn.Sequential:
    """depth 1: linear; depth 2-3: MLP with ``hidden`` units and ReLU."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth - 1):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def pool(h: torch.Tensor) -> torch.Tensor:
    """Global average pool of a feature map; vectors pass through. Half precision (autocast)
    is lifted to float32; float64 stays float64."""
    if h.dtype not in (torch.float32, torch.float64):
        h = h.float()
    return h.mean(dim=(2, 3)) if h.dim() == 4 else h


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; afterwards every submodule gets its own earlier mode back
    (a frozen copied part stays in eval mode while the stages above it train)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


class TransferNet(nn.Module):
    """copied stages -> re-initialised stages -> pool -> head.

    ``pool`` is the backbone family's feature convention (``hpsearch.backbones.FeaturePool``: CLS
    token of a ViT, ...); without it, ``pool`` above (spatial mean; vectors as they are)."""

    def __init__(
        self,
        copied: list[nn.Module],
        upper: list[nn.Module],
        head: nn.Module,
        pool: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.copied = nn.Sequential(*copied)
        self.upper = nn.Sequential(*upper)
        self.head = head
        self.pool = pool  # parameter-free: the state_dict keys stay copied.*, upper.*, head.*

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        return pool(h) if self.pool is None else self.pool(h)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """z: the pooled output of the copied part."""
        return self._pool(self.copied(x))

    def from_copied(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from the copied part's (unpooled) output."""
        return self.head(self._pool(self.upper(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_copied(self.copied(x))

    def head_weight_norm(self) -> float:
        return float(self.head[-1].weight.detach().norm())


@dataclass
class Pretrained:
    """A backbone with its pretrained weights, shared by every trial of a worker."""

    model: nn.Module
    description: str

    def copied_fingerprint(self, n_copied: int) -> str:
        """Hash of the copied stages' parameters and buffers: the feature cache's key part."""
        digest = hashlib.sha1()
        for stage in backbone_stages(self.model)[:n_copied]:
            for name, tensor in stage.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


def build_transfer_net(
    pretrained: Pretrained,
    bb_cfg: DictConfig,
    head_cfg: DictConfig,
    input_dim: int,
    n_classes: int,
    seed: int,
) -> TransferNet:
    """The trial's network: pretrained copied stages, seeded fresh upper stages and head."""
    import copy

    k = int(bb_cfg.layers_copied)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = new_backbone(bb_cfg, input_dim)
        head = build_head(
            output_width(bb_cfg, input_dim), n_classes, int(head_cfg.depth), int(head_cfg.hidden)
        )
    copied = [copy.deepcopy(s) for s in backbone_stages(pretrained.model)[:k]]
    return TransferNet(copied, backbone_stages(fresh)[k:], head)


# --- pretrained weights -----------------------------------------------------------------------


def load_pretrained(
    bb_cfg: DictConfig, input_dim: int, seed: int, source_trainer=None
) -> Pretrained:
    """The backbone with ``backbone.weights``: imagenet, none, source (toy) or a state_dict path."""
    weights = str(bb_cfg.weights)
    if weights == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Pretrained(new_backbone(bb_cfg, input_dim), "random init (weights=none)")
    if weights == "source":
        assert source_trainer is not None, "weights=source needs the toy's source task"
        return Pretrained(source_trainer(), "pretrained in-process on the synthetic source task")
    if weights == "imagenet":
        return Pretrained(_imagenet_backbone(bb_cfg.arch), f"torchvision {bb_cfg.arch} ImageNet")
    model = new_backbone(bb_cfg, input_dim)
    load_state_dict_file(model, Path(weights).expanduser(), bb_cfg.arch)
    return Pretrained(model, f"state_dict {weights}")


def _imagenet_backbone(arch: str) -> nn.Module:
    import torchvision

    weights = torchvision.models.get_weight(
        f"{arch.replace('resnet', 'ResNet')}_Weights.IMAGENET1K_V1"
    )
    try:
        return getattr(torchvision.models, arch)(weights=weights)
    except Exception as err:
        raise HpsearchError(
            f"backbone.weights=imagenet: could not download torchvision's {arch} "
            f"weights ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
            "offline, pass backbone.weights=PATH to a state_dict"
        ) from None


def load_state_dict_file(model: nn.Module, path: Path, arch: str) -> None:
    """Load a state_dict checkpoint into ``model``; a source-task ``fc`` is dropped."""
    if not path.is_file():
        raise HpsearchError(
            f"backbone.weights={str(path)!r}: file not found; expected imagenet, "
            "none, or the path of a saved state_dict"
        )
    state = read_state_dict(path, str(path))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    fit_state_dict(model, state, str(path), f"backbone.arch={arch}", optional=("fc.",))


def read_state_dict(path: Path, shown: str) -> dict[str, torch.Tensor]:
    """The parameter tensors of a checkpoint file (a ``state_dict``/``model`` wrapper and a
    ``module.`` prefix removed); ``shown`` is how the error names it (``backbone.weights=...``)."""
    if not path.is_file():
        raise HpsearchError(
            f"backbone.weights={shown!r}: file not found; expected imagenet, hub, none, or the "
            "path of a saved state_dict (or model directory)"
        )
    if path.stat().st_size == 0:
        raise HpsearchError(
            f"backbone.weights={shown!r}: the file is empty (0 bytes); expected a saved "
            "state_dict (torch.save)"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise HpsearchError(
            f"backbone.weights={shown!r}: not a loadable state_dict ({_reason(err)})"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HpsearchError(
            f"backbone.weights={shown!r}: expected a state_dict (a mapping "
            "of parameter names to tensors)"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def fit_state_dict(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    shown: str,
    what: str,
    optional: tuple[str, ...] = (),
) -> None:
    """Load ``state`` into ``model`` when its keys and shapes match, else one line naming the
    missing, unexpected and mis-shaped keys (keys under ``optional`` prefixes may be absent)."""
    expected = {k for k in model.state_dict() if not k.startswith(optional)}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise HpsearchError(
            f"backbone.weights={shown!r} does not fit {what}: "
            f"missing keys {_few(missing)}, unexpected keys {_few(unexpected)}"
        )
    own = model.state_dict()
    bad = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if v.shape != own[k].shape
    ]
    if bad:
        raise HpsearchError(
            f"backbone.weights={shown!r} does not fit {what}: shape mismatch {_few(bad)}"
        )
    model.load_state_dict(state, strict=False)


def _reason(err: BaseException) -> str:
    """``Type: first line`` of an exception, also one raised without a message."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:160]}" if lines else type(err).__name__


def _few(items: list[str], n: int = 5) -> str:
    if not items:
        return "[]"
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more
