"""Typed schema of the composed config, and the checks Hydra's types cannot express.

The dataclasses are registered in Hydra's ConfigStore as ``hpsearch_schema``; ``conf/config.yaml``
lists it first in its defaults, so a value of the wrong type (``hp.epochs=abc``) fails at compose
time with the key named. ``validate_config`` then checks ranges and cross-field rules (ε in [0, 1),
``layers_copied`` within the backbone's stages, ...) before any work starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from hpsearch.errors import ConfigError

# The Hydra configs: conf/ at the repository's top level, shipped inside the package as
# hpsearch/conf (a link in the repository, files in an installed wheel).
CONF_DIR = Path(__file__).resolve().parent / "conf"

MODES = ("search", "confirm", "dashboard", "report", "replay")
DATA_FORMATS = ("synthetic", "cifar10", "cifar100", "imagefolder", "tensors")
ARCHS = ("linear", "mlp", "resnet18", "resnet34", "resnet50")
CHANNELS_LAST = ("auto", "true", "false")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # backbone.interpolation
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant")
SAMPLERS = ("tpe", "random")
PRUNERS = ("none", "median", "hyperband", "hp_rule", "epoch_rule", "rules", "energy")
# What judges the FT epochs under pruner=energy: its own model (the default), or a wrapped pruner.
FT_PRUNERS = ("model", "none", "median", "hyperband")
# mode=replay's pruner names: a pruner.name, or energy+FT for pruner=energy pruner.ft=FT.
REPLAY_PRUNERS = PRUNERS + tuple(f"energy+{ft}" for ft in FT_PRUNERS if ft != "model")


def replay_pruner_settings(name: str) -> dict[str, str]:
    """The pruner keys a replay pruner name sets: ``energy+median`` -> name=energy, ft=median."""
    base, _, ft = name.partition("+")
    return {"name": base, "ft": ft} if ft else {"name": base}


# Stages a backbone is cut into for `backbone.layers_copied`; the vector backbones have one stage
# per linear layer.
RESNET_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def backbone_stage_count(arch: str, mlp_depth: int = 2) -> int:
    if arch == "linear":
        return 1
    if arch == "mlp":
        return mlp_depth
    return len(RESNET_STAGES)


@dataclass
class SyntheticConfig:
    """The toy task: Gaussian classes in input space, related to a source task by shared
    directions."""

    input_dim: int = 32
    shared_dim: int = 8  # latent directions that both the source and the target classes use
    target_only_dim: int = 4  # directions only the target task needs: FT must find them
    n_classes: int = 5
    class_separation: float = 2.0
    noise: float = 1.0
    source_per_class: int = 400
    source_epochs: int = 30
    seed: int = 1234


@dataclass
class DataConfig:
    format: str = "synthetic"
    root: str | None = None
    download: bool = False
    classes: list[str] | None = None
    train_per_class: int = 200
    val_per_class: int = 100
    test_per_class: int | None = None  # None: the whole test split
    split_seed: int = 0
    image_size: int = 32
    cache_size: int | None = None  # resolution kept in the uint8 cache; None: image_size
    mean: list[float] = field(default_factory=lambda: [0.4914, 0.4822, 0.4465])
    std: list[float] = field(default_factory=lambda: [0.2470, 0.2435, 0.2616])
    crop_padding: int = 4
    flip: bool = True
    eval_batch_size: int = 500
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class BackboneConfig:
    # A family's builder (conf/backbone/{torchvision,timm,hf}.yaml) or your own factory
    # (hpsearch.backbones); null: the backbone is `arch`, built as before.
    _target_: str | None = None
    arch: str = "linear"
    weights: str | None = (
        "source"  # imagenet | hub | none | source (synthetic only) | path to a state_dict / dir
    )
    layers_copied: int = 1
    feature_dim: int = 16  # width of the vector backbones (linear, mlp)
    mlp_depth: int = 2
    name: str | None = None  # a family's model: timm name, HF directory or hub id, resnet18 ...
    kwargs: dict[str, Any] = field(default_factory=dict)  # to timm.create_model / your factory
    block_stages: int = 4  # a ViT's blocks are cut into this many stages (after its embedding)
    # The input spec; null: the weights' own (timm pretrained_cfg, the HF image processor),
    # else data.image_size/mean/std
    input_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None  # bilinear | bicubic | nearest
    # backbone.name as a searched categorical: per name, the backbone keys it sets
    # (e.g. {resnet10t: {_target_: hpsearch.backbones.timm_backbone, weights: DIR}})
    choices: dict[str, Any] = field(default_factory=dict)


@dataclass
class HeadConfig:
    depth: int = 1
    hidden: int = 256


@dataclass
class HPConfig:
    epochs: int = 4  # τ; 0 = finetune from a random head
    lr: float = 0.05
    optimizer: str = "sgd"  # sgd | adam | adamw
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    label_smoothing: float = 0.0  # ε in [0, 1); energy is always measured against unsmoothed labels
    augment: bool = False  # true: no feature cache, every batch augmented through the frozen part
    feature_cache: bool = True  # HP on the copied part's outputs, computed once, cached on disk
    cache_max_gb: float = 4.0  # larger caches fall back to running the frozen part per batch
    until_converged: bool = False  # true: hp.epochs is ignored (and leaves the search space)
    max_epochs: int = 100  # cap on HP epochs when until_converged
    converge_tol: float = 0.001  # converged: objective improved by < tol (relative, 0.1%) ...
    converge_window: int = 5  # ... over the last this many epochs


@dataclass
class FTConfig:
    epochs: int = 8
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    schedule: str = "cosine"  # cosine | constant (per step)
    label_smoothing: float = 0.0


@dataclass
class ConfirmConfig:
    """``mode=confirm``: re-run the search's best configurations and the baselines on fresh,
    shared seeds, and answer which schedule to use (``hpsearch.study.confirm``)."""

    top_k: int = 3  # best distinct configurations of the search to confirm
    seeds: int = 3  # seeds each configuration and baseline runs (the same seeds for all)
    baselines: list[str] = field(default_factory=lambda: ["ft_only", "lp_ft"])  # schedule names
    auto: bool = False  # confirm at the end of a search (one process, or the workers=N launcher)


@dataclass
class StudyConfig:
    name: str = "toy"  # conf/config.yaml: the experiment's name unless given
    n_trials: int = 20  # per worker
    sampler: str = "tpe"  # tpe | random
    seed: int = 0  # conf/config.yaml: the top-level seed unless given
    n_startup_trials: int = 8  # random trials before TPE models the space
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # fixed trials run first:
    # a list of {dotted.key: value} mappings
    baselines: list[str] = field(default_factory=list)  # schedule names enqueued as fixed trials
    top_k: int = 5  # rows of the best-trials table printed at the end
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)


@dataclass
class StorageConfig:
    url: str | None = "sqlite:///storage/hpsearch.db"  # storage=postgres: $HPSEARCH_STORAGE_URL
    artifacts: str = "storage/artifacts"  # trial checkpoints; shared by all workers of a study
    cache_dir: str = "storage/cache"
    reports: str = "storage/reports"  # mode=report writes <reports>/<study.name>/
    logs: str = "storage/logs"  # per-worker logs of the local launcher (workers=N)
    heartbeat_interval: int = 10  # s between heartbeats of a running trial
    grace_period: int = 60  # s without a heartbeat before a trial is failed and retried
    max_retry: int = 3  # retries of a trial whose worker died or was stopped
    outage_timeout: float = 120.0  # s a worker waits for an unreachable storage before exit 3
    pool_size: int = 2  # database connections per worker (trial thread + heartbeat thread)
    pool_recycle: int = 300  # s before a pooled connection is replaced (idle timeouts, proxies)


@dataclass
class PrunerConfig:
    name: str = "none"  # none | median | hyperband | energy
    n_startup_trials: int = 4  # completed trials before it prunes
    n_warmup_steps: int = 1  # median: FT epochs before it prunes
    min_resource: int = 1  # hyperband
    reduction_factor: int = 3  # hyperband
    # pruner=hp_rule | epoch_rule | rules (hpsearch.pruners.QuantileRulePruner); null: the
    # rule's own default (hp_rule 0.5; epoch_rule 0.75; rules 0.4 and 0.6)
    hp_quantile: float | None = None  # keep if hp_val_acc >= this quantile of those seen
    epoch_quantile: float | None = None  # keep if the FT acc at `epoch` >= this quantile
    epoch: int = 1  # the FT epoch the epoch rule judges
    # pruner=energy (hpsearch.pruners.EnergyPruner): one model at the gate and every FT epoch
    ft: str = "model"  # who judges the FT epochs: model (its own) | none | median | hyperband
    top_k: int = 1  # the trial must be likely to end above the top_k-th best (pruner=energy: 3)
    min_prob: float = 0.003  # prune when P(ends above it) is below this (pruner=energy: 0.05)
    energy_min: float | None = None  # optional hard band on the energy (from the first trial)
    energy_max: float | None = None
    signals: list[str] | None = None  # user attrs it reads; None: hpsearch.pruners.GATE_SIGNALS
    # user attrs it reads after an FT epoch besides the FT accuracy; None: CURVE_SIGNALS (ft_lr)
    curve_signals: list[str] | None = None
    # searched categorical params it reads at the gate (each as how the completed trials of the
    # same choice ended), e.g. [backbone.name]; None: hpsearch.pruners.GATE_PARAMS (none)
    params: list[str] | None = None
    # Earlier studies on related data (same objective and direction) whose completed trials the
    # gate's predictor is fitted on too; in prior_storage, or in storage.url when that is null.
    prior_studies: list[str] = field(default_factory=list)
    prior_storage: str | None = None


@dataclass
class ReplayConfig:
    """``mode=replay``: today's pruners played over random orders of a finished study's trials."""

    pruners: list[str] = field(
        default_factory=lambda: ["none", "hp_rule", "epoch_rule", "rules", "energy"]
    )
    orders: int = 200  # random orders of the study's complete trials
    # trials in each order (drawn without replacement); null: 40, or every complete trial of a
    # smaller study (the replay says so)
    budget: int | None = None
    seed: int = 0  # of the orders
    processes: int = 0  # worker processes; 0: one per available CPU
    skip_pruned: bool = False  # true: replay a study that has pruned trials, on its complete ones
    frontier: bool = False  # true: also each arm at every value of its main setting (the frontier)


@dataclass
class DashboardConfig:
    """Where ``mode=dashboard`` listens; loopback by default, so nothing is exposed."""

    host: str = "127.0.0.1"
    port: int = 8080


@dataclass
class ScheduleConfig:
    """A named schedule (conf/schedule/): config values it fixes, as a nested mapping."""

    name: str = "none"
    about: str = ""
    set: dict[str, Any] = field(default_factory=dict)


@dataclass
class HpsearchConfig:
    mode: str = "search"  # search | confirm | dashboard | report | replay (docs/configuration.md)
    experiment: str = "toy"
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    # Memory layout of conv nets and their inputs: auto = channels_last for a ResNet on every
    # device (on the CPU: FT 1.08x, evaluation 1.19x less CPU time, benchmarks/pipeline.py);
    # true/false force it.
    channels_last: str = "auto"
    seed: int = 0
    progress: bool = True  # tqdm bars for feature extraction, HP and FT
    workers: int = 1  # > 1: start this many local worker processes of this command and wait
    devices: list[str] | None = None  # with workers: CUDA_VISIBLE_DEVICES of each worker
    workers_per_device: int = 1  # with devices: at most this many workers share each GPU
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    hp: HPConfig = field(default_factory=HPConfig)
    ft: FTConfig = field(default_factory=FTConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    search_space: dict[str, Any] = field(default_factory=dict)


def channels_last_choice(value: Any) -> str:
    """``channels_last`` as one of CHANNELS_LAST (a command-line ``true`` reads "True")."""
    return str(value).strip().lower()


def register_schema() -> None:
    ConfigStore.instance().store(name="hpsearch_schema", node=HpsearchConfig)


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: must be {allowed}")


def _one_of(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> None:
    value = _select(cfg, key)
    _require(value in choices, key, value, "one of " + ", ".join(choices))


def _select(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def validate_config(cfg: DictConfig) -> None:
    """Check ranges and cross-field rules; raise ConfigError naming the first bad key."""
    _check_choices(cfg)
    _check_ranges(cfg)
    _require(cfg.ft.epochs >= 1, "ft.epochs", cfg.ft.epochs, FT_EPOCHS_HELP)
    _check_study_name(cfg.study.name)
    _check_pruner_ranges(cfg.pruner)
    _check_data_classes(cfg.data)
    _check_storage(cfg)
    _check_devices(cfg)
    _check_dashboard(cfg)
    _check_model_and_data(cfg)
    _check_sources(cfg)


def _check_choices(cfg: DictConfig) -> None:
    """Every key that names one of a fixed set of choices."""
    _one_of(cfg, "mode", MODES)
    _one_of(cfg, "data.format", DATA_FORMATS)
    staged = bool(cfg.backbone.get("_target_"))  # a family's backbone (hpsearch.backbones)
    if not staged:
        _one_of(cfg, "backbone.arch", ARCHS)
    _check_backbone_family(cfg.backbone, staged)
    _one_of(cfg, "hp.optimizer", OPTIMIZERS)
    _one_of(cfg, "ft.optimizer", OPTIMIZERS)
    _one_of(cfg, "ft.schedule", SCHEDULES)
    _one_of(cfg, "study.sampler", SAMPLERS)
    _one_of(cfg, "pruner.name", PRUNERS)
    _one_of(cfg, "pruner.ft", FT_PRUNERS)
    if cfg.pruner.name == "energy":
        _check_prior_studies(cfg)
        _check_gate_params(cfg)
    _check_replay(cfg.replay)


def _check_ranges(cfg: DictConfig) -> None:
    """Counts, rates and sizes."""
    for key in (
        "hp.epochs",
        "ft.epochs",
        "hp.weight_decay",
        "ft.weight_decay",
        "hp.momentum",
        "ft.momentum",
        "data.split_seed",
        "data.crop_padding",
    ):
        value = _select(cfg, key)
        _require(value >= 0, key, value, ">= 0")
    for key in ("hp.lr", "ft.lr"):
        value = _select(cfg, key)
        _require(value > 0 and math.isfinite(value), key, value, "a finite number > 0")
    for key in (
        "hp.batch_size",
        "ft.batch_size",
        "data.eval_batch_size",
        "data.train_per_class",
        "data.val_per_class",
        "data.image_size",
        "head.hidden",
        "backbone.feature_dim",
        "study.top_k",
        "study.confirm.top_k",
        "study.confirm.seeds",
        "workers",
        "storage.heartbeat_interval",
        "storage.pool_size",
        "storage.pool_recycle",
        "hp.max_epochs",
        "hp.converge_window",
    ):
        value = _select(cfg, key)
        _require(value >= 1, key, value, ">= 1")
    for key in ("study.n_trials", "storage.max_retry"):  # n_trials=0: create the study only
        value = _select(cfg, key)
        _require(value >= 0, key, value, ">= 0")
    _require(cfg.hp.converge_tol >= 0, "hp.converge_tol", cfg.hp.converge_tol, ">= 0")
    for key in ("hp.label_smoothing", "ft.label_smoothing"):
        value = _select(cfg, key)
        _require(0.0 <= value < 1.0, key, value, "in [0, 1)")


def _check_storage(cfg: DictConfig) -> None:
    _require(
        bool(cfg.storage.url),
        "storage.url",
        cfg.storage.url,
        "a database URL: export HPSEARCH_STORAGE_URL=postgresql+psycopg2://user:pass@host:"
        "5432/db (storage=postgres) or pass storage.url=...",
    )
    _require(
        math.isfinite(cfg.storage.outage_timeout) and cfg.storage.outage_timeout > 0,
        "storage.outage_timeout",
        cfg.storage.outage_timeout,
        "a finite number of seconds > 0 (how long a worker rides out a storage outage)",
    )
    _require(
        cfg.storage.grace_period > cfg.storage.heartbeat_interval,
        "storage.grace_period",
        cfg.storage.grace_period,
        f"> storage.heartbeat_interval={cfg.storage.heartbeat_interval} (seconds)",
    )


def _check_devices(cfg: DictConfig) -> None:
    """``device``, ``devices`` and ``workers_per_device``, and the memory layout."""
    device = cfg.device
    _require(
        device in ("auto", "cpu", "cuda") or str(device).startswith("cuda:"),
        "device",
        device,
        "auto, cpu, cuda or cuda:N",
    )

    per_device = cfg.workers_per_device
    _require(per_device >= 1, "workers_per_device", per_device, ">= 1")
    if cfg.devices is not None:
        _require(
            len(cfg.devices) >= 1 and all(str(d).strip() for d in cfg.devices),
            "devices",
            list(cfg.devices),
            "a non-empty list of GPU ids, e.g. devices=[0,1]",
        )
        _require(
            device in ("auto", "cuda"),
            "device",
            device,
            "auto or cuda with devices=[...] (each worker sees its one GPU as cuda:0)",
        )
        slots = per_device * len(cfg.devices)
        _require(
            cfg.workers <= slots,
            "workers",
            cfg.workers,
            f"<= workers_per_device x len(devices) = {per_device} x {len(cfg.devices)} = "
            f"{slots}; raise workers_per_device to run more workers on each GPU",
        )
    else:
        _require(
            per_device == 1,
            "workers_per_device",
            per_device,
            "1 without devices=[...] (it says how many workers share each listed GPU)",
        )
    _require(
        channels_last_choice(cfg.channels_last) in CHANNELS_LAST,
        "channels_last",
        cfg.channels_last,
        "one of " + ", ".join(CHANNELS_LAST),
    )


def _check_dashboard(cfg: DictConfig) -> None:
    _require(
        1 <= cfg.dashboard.port <= 65535,
        "dashboard.port",
        cfg.dashboard.port,
        "a TCP port in [1, 65535]",
    )
    _require(
        bool(str(cfg.dashboard.host).strip()),
        "dashboard.host",
        cfg.dashboard.host,
        "a host name or IP address to bind (127.0.0.1: this machine only)",
    )


def _check_model_and_data(cfg: DictConfig) -> None:
    """The head, the backbone's stages and the data's sizes and statistics."""
    _require(1 <= cfg.head.depth <= 3, "head.depth", cfg.head.depth, "1 (linear), 2 or 3 (MLP)")
    _require(cfg.backbone.mlp_depth >= 1, "backbone.mlp_depth", cfg.backbone.mlp_depth, ">= 1")
    # a family's stage count is known once its model is built (hpsearch.backbones checks it)
    staged = bool(cfg.backbone.get("_target_"))
    n_stages = 10**9 if staged else backbone_stage_count(cfg.backbone.arch, cfg.backbone.mlp_depth)
    _require(
        0 <= cfg.backbone.layers_copied <= n_stages,
        "backbone.layers_copied",
        cfg.backbone.layers_copied,
        f"in [0, {n_stages}] for {cfg.backbone.arch} (stages: {_stage_names(cfg)})",
    )
    if cfg.data.test_per_class is not None:
        _require(
            cfg.data.test_per_class >= 1,
            "data.test_per_class",
            cfg.data.test_per_class,
            ">= 1 or null (whole test split)",
        )
    if cfg.data.cache_size is not None:
        _require(
            cfg.data.cache_size >= 1,
            "data.cache_size",
            cfg.data.cache_size,
            ">= 1 or null (= data.image_size)",
        )
    _require(
        len(cfg.data.mean) == 3 and len(cfg.data.std) == 3 and min(cfg.data.std) > 0,
        "data.std",
        list(cfg.data.std),
        "3 channel means and 3 positive channel stds",
    )


def _check_sources(cfg: DictConfig) -> None:
    """Where the data and the backbone's weights come from, and that they fit together."""
    staged = bool(cfg.backbone.get("_target_"))
    vector_data = cfg.data.format == "synthetic"
    vector_arch = not staged and cfg.backbone.arch in ("linear", "mlp")
    _require(
        vector_data == vector_arch,
        "backbone.arch",
        cfg.backbone.arch,
        "linear or mlp for data.format=synthetic, a resnet or a backbone family for image data",
    )
    if cfg.data.format != "synthetic" and not cfg.data.root:
        raise ConfigError(
            f"data.root is not set: experiment {cfg.experiment!r} needs "
            f"data.root=DIR ({_ROOT_HELP[cfg.data.format]})"
        )
    if cfg.backbone.weights is None or str(cfg.backbone.weights) == "":
        raise ConfigError(
            f"backbone.weights is not set: experiment {cfg.experiment!r} needs "
            "backbone.weights=imagenet, none, or the path of a state_dict"
        )
    weights = str(cfg.backbone.weights)
    if weights == "source":
        _require(
            vector_data,
            "backbone.weights",
            weights,
            "imagenet, none or a state_dict path for a resnet ('source' is the toy's "
            "in-process pretraining)",
        )
    if weights in ("imagenet", "hub"):
        _require(
            not vector_arch,
            "backbone.weights",
            weights,
            "source, none or a state_dict path for a vector backbone",
        )
    synth = cfg.data.synthetic
    for key in ("input_dim", "shared_dim", "n_classes", "source_per_class"):
        _require(synth[key] >= 1, f"data.synthetic.{key}", synth[key], ">= 1")
    _require(synth.n_classes >= 2, "data.synthetic.n_classes", synth.n_classes, ">= 2")


def _check_backbone_family(bb: DictConfig, staged: bool) -> None:
    """The keys of a family's backbone that need no model to check."""
    _require(bb.block_stages >= 1, "backbone.block_stages", bb.block_stages, ">= 1")
    if bb.input_size is not None:
        _require(bb.input_size >= 1, "backbone.input_size", bb.input_size, ">= 1 or null")
    for key in ("mean", "std"):
        value = bb[key]
        if value is not None:
            _require(
                len(value) == 3 and (key == "mean" or min(value) > 0),
                f"backbone.{key}",
                list(value),
                "null or 3 channel values (stds > 0)",
            )
    if bb.interpolation is not None:
        _require(
            bb.interpolation in INTERPOLATIONS,
            "backbone.interpolation",
            bb.interpolation,
            "null or one of " + ", ".join(INTERPOLATIONS),
        )
    if staged:
        _require(
            "." in str(bb._target_),
            "backbone._target_",
            bb._target_,
            "a module.function such as hpsearch.backbones.timm_backbone or my_pkg.make_backbone",
        )
    for name, entry in bb.choices.items():
        _require(
            isinstance(entry, DictConfig) and "choices" not in entry,
            f"backbone.choices.{name}",
            entry,
            f"a mapping of backbone keys (not choices) set when backbone.name is {name}",
        )


def _check_prior_studies(cfg: DictConfig) -> None:
    """The prior studies are named in the config; the gate's own arguments are checked by the
    pruner itself (``hpsearch.study.pruning.check_pruner``)."""
    names = [str(n) for n in cfg.pruner.prior_studies]
    _require(
        all(names) and len(set(names)) == len(names),
        "pruner.prior_studies",
        names,
        "a list of distinct, non-empty study names",
    )
    _require(
        str(cfg.study.name) not in names
        or cfg.pruner.prior_storage not in (None, str(cfg.storage.url)),
        "pruner.prior_studies",
        names,
        f"a list of earlier studies, not this one (study.name={cfg.study.name})",
    )


def _check_gate_params(cfg: DictConfig) -> None:
    """``pruner.params``: the gate encodes each by its choices, so one the study searches must be
    a categorical (a float or int parameter would give every trial its own choice)."""
    params = cfg.pruner.params
    if params is None:
        return
    names = [str(n) for n in params]
    space = cfg.search_space or {}
    numeric = [n for n in names if n in space and space[n].get("type") != "categorical"]
    _require(
        all(names) and len(set(names)) == len(names) and not numeric,
        "pruner.params",
        names,
        "a list of distinct parameter names, each a categorical of search_space where searched"
        + (f" ({', '.join(numeric)} is not)" if numeric else ""),
    )


# A study name is a file name (storage/hydra/<name>/, <storage.logs>/<name>/, the report's
# <storage.reports>/<name>/) and a database key (Optuna's studies.study_name: 512 characters):
# at most this many bytes of UTF-8, which fits both.
STUDY_NAME_MAX_BYTES = 200
STUDY_NAME_FORBIDDEN = "/\\"  # path separators
FT_EPOCHS_HELP = (
    ">= 1: the objective is the validation accuracy after FT (for head probing alone, "
    "compare the trials' hp_val_acc)"
)


def _shown(value: Any, n: int = 40) -> str:
    """A value as an error line shows it: its repr, cut to ``n`` characters."""
    text = repr(value)
    return text if len(text) <= n else f"{text[:n]}... ({len(str(value))} characters)"


def _check_study_name(name: Any) -> None:
    """``study.name``: non-empty, at most STUDY_NAME_MAX_BYTES bytes, no path separator, no
    control character, not ``.`` or ``..``, no white space around it."""
    import unicodedata

    text = "" if name is None else str(name)
    problem = None
    if not text.strip():
        problem = "empty"
    elif len(text.encode("utf-8")) > STUDY_NAME_MAX_BYTES:
        problem = f"{len(text.encode('utf-8'))} bytes long"
    elif any(c in STUDY_NAME_FORBIDDEN for c in text):
        problem = "a path: it holds / or \\"
    elif any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text):
        problem = "holding a control character"
    elif text in (".", "..") or text != text.strip():
        problem = "'.', '..' or padded with white space"
    if problem:
        raise ConfigError(
            f"study.name={_shown(text)} is invalid ({problem}): must be 1 to "
            f"{STUDY_NAME_MAX_BYTES} bytes of UTF-8 without / \\ or control characters "
            "(it names folders and a database row)"
        )


def _check_pruner_ranges(p: DictConfig) -> None:
    """The Hyperband settings, whichever pruner is chosen (a value set for a later run, or for
    mode=replay, is checked now rather than when it is used): Optuna's HyperbandPruner checks
    them only once it prunes. Every other pruner.* value is checked by its pruner's constructor
    (``hpsearch.study.pruning.check_pruner``)."""
    _require(p.min_resource >= 1, "pruner.min_resource", p.min_resource, ">= 1")
    _require(p.reduction_factor >= 2, "pruner.reduction_factor", p.reduction_factor, ">= 2")


def _check_data_classes(d: DictConfig) -> None:
    """``data.classes``: null, or a non-empty list of class names of an image dataset."""
    if d.classes is None:
        return
    if d.format == "synthetic":
        raise ConfigError(
            f"data.classes={_shown(list(d.classes))} is invalid: must be null for "
            "data.format=synthetic (the toy's classes are data.synthetic.n_classes)"
        )
    _require(
        len(d.classes) >= 1 and all(str(c).strip() for c in d.classes),
        "data.classes",
        list(d.classes),
        "null (every class) or a non-empty list of class names",
    )


def _check_replay(r: DictConfig) -> None:
    names = list(r.pruners)
    unknown = [n for n in names if n not in REPLAY_PRUNERS]
    _require(
        bool(names) and not unknown,
        "replay.pruners",
        names,
        "a non-empty list of " + ", ".join(REPLAY_PRUNERS),
    )
    twice = sorted({n for n in names if names.count(n) > 1})
    _require(
        not twice, "replay.pruners", names, f"a list without repeats ({', '.join(twice)} twice)"
    )
    _require(r.orders >= 1, "replay.orders", r.orders, ">= 1")
    _require(
        r.budget is None or r.budget >= 2, "replay.budget", r.budget, ">= 2 (trials per order)"
    )
    _require(r.processes >= 0, "replay.processes", r.processes, ">= 0 (0: one per available CPU)")


_ROOT_HELP = {
    "imagefolder": "an ImageFolder directory: DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg",
    "cifar10": "where CIFAR-10 is or is downloaded to",
    "cifar100": "where CIFAR-100 is or is downloaded to",
    "tensors": "a .pt file of decoded splits, as written to storage/cache/data",
}


def _stage_names(cfg: DictConfig) -> str:
    if cfg.backbone.get("_target_"):
        return "the family's stages"
    if cfg.backbone.arch.startswith("resnet"):
        return ", ".join(RESNET_STAGES)
    n = backbone_stage_count(cfg.backbone.arch, cfg.backbone.mlp_depth)
    return ", ".join(f"linear{i + 1}" for i in range(n))
