"""The memory layout (channels_last) changes speed, not results; evaluation and feature
extraction under inference_mode leave tensors that training can still use."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from imagedata import make_imagefolder

from hpsearch.app import compose_config
from hpsearch.errors import ConfigError
from hpsearch.models import build_transfer_net
from hpsearch.plan import plan_study
from hpsearch.trial import Objective, Workspace
from hpsearch.trial.ft import Finetuner, features
from hpsearch.trial.hp import head_probe
from hpsearch.trial.workspace import use_channels_last

# One trial in the two layouts differs only by floating-point reordering inside the
# convolutions, which training then carries along. Measured on a real trial (low-data
# split-CIFAR, tau=4, 8 FT epochs of 4 steps; benchmarks/pipeline.py --compare-trial): HP
# metrics agreed to 2e-7, FT's continuous metrics to 1.2e-4 relative, accuracies to one image
# (val 0.1 pt, test 0.02 pt) — as much as running NCHW at another thread count moved them.
# The tolerances here: one training step STEP_RTOL, HP HP_RTOL, FT's continuous metrics
# FT_RTOL (measured here: < 1e-5), accuracies one image. FT runs 2 steps of 42 images: with
# many steps of a few images, a randomly initialised ResNet amplifies rounding so much that
# a 1e-6 relative change of its inputs moves adaptation_cos by 6% (measured), in either layout.
STEP_RTOL, HP_RTOL, FT_RTOL = 1e-4, 1e-5, 1e-3
HP_METRICS = ("energy", "hp_train_loss", "head_norm", "feature_norm_0")
FT_METRICS = ("adaptation_l2", "adaptation_cos", "feature_norm_T")
ACCURACIES = {"hp_train_acc": 3 * 14, "hp_val_acc": 3 * 6, "ft_val_acc": 3 * 6, "test_acc": 3 * 6}


def image_config(tmp_path: Path, extra: list[str] = ()):
    root = tmp_path / "data"
    if not root.exists():
        make_imagefolder(root, ["a", "b", "c"], train_per_class=20, test_per_class=6, size=16)
    return compose_config(
        [
            "data=imagefolder",
            f"data.root={root}",
            "data.train_per_class=14",
            "data.val_per_class=6",
            "data.image_size=16",
            "backbone=resnet18",
            "backbone.weights=none",
            "backbone.layers_copied=5",
            "search_space=none",
            "hp.epochs=2",
            "hp.batch_size=14",
            "ft.epochs=2",
            "ft.batch_size=42",
            "ft.lr=0.01",
            "data.eval_batch_size=16",
            "progress=false",
            "device=cpu",
            f"storage.cache_dir={tmp_path / 'cache'}",
            *extra,
        ]
    )


def run_trial(cfg, cache_dir: Path) -> dict:
    cfg = cfg.copy()
    cfg.storage.cache_dir = str(cache_dir)  # each layout computes its own feature cache
    study = optuna.create_study(direction="maximize")
    study.optimize(Objective(cfg, plan_study(cfg), Workspace(cfg)), n_trials=1)
    return dict(study.trials[0].user_attrs)


def test_one_training_step_agrees_in_both_layouts(tmp_path: Path) -> None:
    """Every parameter after one FT step (augmented batch, forward, backward, SGD step)."""
    params = {}
    for layout in ("false", "true"):
        cfg = image_config(tmp_path, [f"channels_last={layout}", "ft.lr=0.05"])
        ws = Workspace(cfg)
        task = ws.task(cfg)
        net = Objective(cfg, plan_study(cfg), ws).build_net(cfg, task, seed=0)
        tuner = Finetuner(net, task.splits.train, task.splits.val, task.pipeline, cfg.ft, 0, 16)
        idx = torch.arange(14)
        net.train()
        inputs = task.pipeline(
            task.splits.train.x[idx], augment=True, gen=torch.Generator().manual_seed(0)
        )
        loss = torch.nn.functional.cross_entropy(net(inputs), task.splits.train.y[idx])
        loss.backward()
        tuner.optimizer.step()
        params[layout] = {k: v.detach().clone() for k, v in net.state_dict().items()}
    moved = 0
    for key, nchw in params["false"].items():
        cl = params["true"][key]
        if nchw.is_floating_point():
            scale = nchw.abs().max().clamp_min(1e-6)
            assert (cl - nchw).abs().max() <= STEP_RTOL * scale, key
            moved += 1
    assert moved > 100  # every conv, BatchNorm and head tensor was compared


def test_a_trial_gives_the_same_metrics_in_both_layouts(tmp_path: Path) -> None:
    nchw = run_trial(image_config(tmp_path, ["channels_last=false"]), tmp_path / "a")
    cl = run_trial(image_config(tmp_path, ["channels_last=true"]), tmp_path / "b")
    for key in HP_METRICS:
        assert cl[key] == pytest.approx(nchw[key], rel=HP_RTOL), key
    for key in FT_METRICS:
        assert cl[key] == pytest.approx(nchw[key], rel=FT_RTOL), key
    for key, n in ACCURACIES.items():
        assert abs(cl[key] - nchw[key]) <= 1 / n + 1e-9, (key, cl[key], nchw[key])
    assert len(cl["ft_val_acc_curve"]) == len(nchw["ft_val_acc_curve"]) == 2
    assert nchw["adaptation_l2"] > 0.1 * nchw["feature_norm_0"]  # FT really moved the features


def test_the_layout_really_changes(tmp_path: Path) -> None:
    """auto and true run a ResNet in channels_last (inputs and weights), false in NCHW."""
    for setting, expected in (("auto", True), ("true", True), ("True", True), ("false", False)):
        cfg = image_config(tmp_path, [f"channels_last={setting}"])
        ws = Workspace(cfg)
        task = ws.task(cfg)
        x = task.pipeline(task.splits.train.x[:4])
        assert x.is_contiguous(memory_format=torch.channels_last) == expected, setting
        net = Objective(cfg, plan_study(cfg), ws).build_net(cfg, task, seed=0)
        conv = net.copied[0][0].weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == expected, setting


def test_vector_backbones_never_use_channels_last() -> None:
    assert use_channels_last("auto", conv=False) is False
    assert use_channels_last("true", conv=False) is False
    assert use_channels_last("auto", conv=True) is True
    assert use_channels_last("False", conv=True) is False


def test_bad_channels_last_is_a_one_line_error() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^channels_last='sometimes' is invalid: must be one "
        r"of auto, true, false$",
    ):
        compose_config(["channels_last=sometimes"])


@pytest.mark.parametrize("feature_cache", [True, False])
def test_hp_trains_on_outputs_computed_under_inference_mode(
    tmp_path: Path, feature_cache: bool
) -> None:
    """The cache is computed under inference_mode, HP's per-batch frozen outputs under no_grad:
    either way the re-initialised stages (layers_copied=3) train on them, which autograd refuses
    for inference tensors."""
    cfg = image_config(
        tmp_path, [f"hp.feature_cache={str(feature_cache).lower()}", "backbone.layers_copied=3"]
    )
    ws = Workspace(cfg)
    task = ws.task(cfg)
    net = build_transfer_net(task.pretrained, cfg.backbone, cfg.head, 3, task.splits.n_classes, 1)
    before = [p.detach().clone() for p in net.upper.parameters()]
    outputs, how = ws.copied_outputs(cfg, task, net)
    assert how == ("cache" if feature_cache else "frozen")
    result = head_probe(net, outputs, task.splits.train.y, task.splits.val.y, cfg.hp, 3, 16)
    assert result.epochs_run == 2
    assert any(not torch.equal(a, p) for a, p in zip(before, net.upper.parameters()))
    batch = outputs.train_batch(torch.arange(4), torch.Generator().manual_seed(0))
    assert not batch.is_inference()


def test_features_can_enter_autograd(tmp_path: Path) -> None:
    cfg = image_config(tmp_path)
    ws = Workspace(cfg)
    task = ws.task(cfg)
    net = build_transfer_net(task.pretrained, cfg.backbone, cfg.head, 3, task.splits.n_classes, 1)
    z = features(net, task.splits.val, task.pipeline, 16)
    assert not z.is_inference() and z.shape == (len(task.splits.val), 512)
    w = torch.ones(z.shape[1], requires_grad=True)
    (z @ w).sum().backward()  # raises for an inference tensor
    assert w.grad is not None
