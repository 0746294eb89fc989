"""Head probing keeps the copied part untouched and gives the same head cached or not."""

from __future__ import annotations

import torch
from imagedata import make_imagefolder

from hpsearch.app import compose_config
from hpsearch.models import backbone_stages, build_transfer_net
from hpsearch.trial import Workspace
from hpsearch.trial.hp import head_probe


def resnet_setup(tmp_path, layers_copied: int, extra: list[str] = ()):
    root = tmp_path / "data"
    if not root.exists():
        make_imagefolder(root, ["a", "b", "c"], train_per_class=14, test_per_class=2)
    cfg = compose_config(
        [
            "data=imagefolder",
            f"data.root={root}",
            "data.train_per_class=10",
            "data.val_per_class=4",
            "data.image_size=32",
            "backbone=resnet18",
            "backbone.weights=none",
            f"backbone.layers_copied={layers_copied}",
            "search_space=none",
            "hp.epochs=2",
            "hp.batch_size=8",
            "hp.lr=0.05",
            "progress=false",
            f"storage.cache_dir={tmp_path / 'cache'}",
            "device=cpu",
            *extra,
        ]
    )
    ws = Workspace(cfg)
    task = ws.task(cfg)
    net = build_transfer_net(
        task.pretrained, cfg.backbone, cfg.head, 3, task.splits.n_classes, seed=5
    )
    return cfg, ws, task, net


def probe(cfg, ws, task, net):
    outputs, how = ws.copied_outputs(cfg, task, net)
    result = head_probe(
        net, outputs, task.splits.train.y, task.splits.val.y, cfg.hp, seed=3, eval_batch_size=16
    )
    return result, how


def test_copied_part_and_bn_buffers_bit_identical_after_hp(tmp_path):
    cfg, ws, task, net = resnet_setup(tmp_path, layers_copied=3)
    pre_stages = backbone_stages(task.pretrained.model)
    upper_before = [{k: v.clone() for k, v in s.state_dict().items()} for s in net.upper]
    result, _ = probe(cfg, ws, task, net)
    assert result.epochs_run == 2
    for copied, pretrained in zip(net.copied, pre_stages[:3]):
        for (name, a), (_, b) in zip(copied.state_dict().items(), pretrained.state_dict().items()):
            assert torch.equal(a, b), f"copied {name} changed during HP"
    # Re-initialised stages are not the pretrained ones, and HP trained them.
    for stage, pretrained, before in zip(net.upper, pre_stages[3:], upper_before):
        w, w_pre = stage[0].conv1.weight, pretrained[0].conv1.weight
        assert not torch.equal(w, w_pre)
        assert not torch.equal(stage[0].conv1.weight, before["0.conv1.weight"])
        assert not torch.equal(stage[0].bn1.running_mean, before["0.bn1.running_mean"])


def test_hp_on_cached_features_equals_hp_through_frozen_backbone(tmp_path):
    heads = {}
    for cache in (True, False):
        cfg, ws, task, net = resnet_setup(
            tmp_path, layers_copied=4, extra=[f"hp.feature_cache={str(cache).lower()}"]
        )
        result, how = probe(cfg, ws, task, net)
        assert how == ("cache" if cache else "frozen") or (cache and how == "cache-disk")
        heads[cache] = (net.head[-1].weight.detach().clone(), result.energy_curve)
    torch.testing.assert_close(heads[True][0], heads[False][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        torch.tensor(heads[True][1]), torch.tensor(heads[False][1]), atol=1e-5, rtol=1e-5
    )


def test_feature_cache_is_reused_from_disk(tmp_path):
    cfg, ws, task, net = resnet_setup(tmp_path, layers_copied=5)
    _, how = probe(cfg, ws, task, net)
    assert how == "cache"
    cfg, ws, task, net = resnet_setup(tmp_path, layers_copied=5)
    _, how = probe(cfg, ws, task, net)
    assert how == "cache-disk"
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 1
