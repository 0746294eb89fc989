"""Where a trial's time goes, on the split-CIFAR benchmark (../shared/BENCHMARK.md).

Prints, measured in one run:
  - feature extraction: the copied part's outputs for train/val/test (the cache HP trains on);
  - one HP epoch on cached features vs one HP epoch through the frozen backbone (target >= 100x);
  - one FT epoch, and the share of it spent outside the model's forward/backward/step
    (batch indexing, augmentation, resize, normalisation; target <= 10%);
  - the validation accuracy of one full trial with tau = 4.

    python benchmarks/pipeline.py --data-root ../shared/data/cifar10 \
        --weights ../shared/weights/resnet18_cifar10_src5.pt [--device cpu] [--ft-epochs 8]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpsearch.app import compose_config  # noqa: E402
from hpsearch.data.features import CachedOutputs, FrozenOutputs  # noqa: E402
from hpsearch.trial.ft import Finetuner, accuracy  # noqa: E402
from hpsearch.models import build_transfer_net  # noqa: E402
from hpsearch.trial.hp import head_probe  # noqa: E402
from hpsearch.trial.optim import epoch_batches  # noqa: E402
from hpsearch.trial import Workspace  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ft-epochs", type=int, default=8)
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    parser.add_argument("--override", nargs="*", default=[],
                        help="extra config overrides, e.g. data.format=tensors")
    args = parser.parse_args()

    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="hpsearch-bench-")
    cfg = compose_config(["+experiment=split_cifar", f"data.root={args.data_root}",
                          f"backbone.weights={args.weights}", f"device={args.device}",
                          "search_space=none", "hp.epochs=4", f"ft.epochs={args.ft_epochs}",
                          f"storage.cache_dir={cache_dir}", "progress=false", *args.override])
    ws = Workspace(cfg)
    device = ws.device
    t_data, task = timed(lambda: ws.task(cfg), device)
    n_total = len(task.splits.train) + len(task.splits.val) + len(task.splits.test)
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    print(f"decode + load data ({n_total} images, first run decodes JPEGs): {t_data:.2f} s")

    def fresh_net(seed: int = 0):
        net = build_transfer_net(task.pretrained, cfg.backbone, cfg.head, 3,
                                 task.splits.n_classes, seed).to(device)
        return net.to(memory_format=torch.channels_last) if task.pipeline.channels_last else net

    net = fresh_net()
    t_feat, got = timed(lambda: ws.copied_outputs(cfg, task, net), device)
    outputs, how = got
    print(f"feature extraction ({n_total} images, {how}): {t_feat:.2f} s "
          f"({n_total / t_feat:.0f} images/s)")

    hp_one = cfg.copy()
    hp_one.hp.epochs = 1
    y_train, y_val = task.splits.train.y, task.splits.val.y
    eval_bs = int(cfg.data.eval_batch_size)
    cached_net = fresh_net()  # built outside the timing: a fresh ResNet's init is not HP
    head_probe(fresh_net(), outputs, y_train, y_val, hp_one.hp, 0, eval_bs, ws.autocast)  # warm-up
    t_hp_cached, _ = timed(lambda: head_probe(cached_net, outputs, y_train, y_val, hp_one.hp, 0,
                                              eval_bs, ws.autocast), device)
    frozen_net = fresh_net()
    frozen = FrozenOutputs(frozen_net.copied, task.splits, task.pipeline, False, ws.autocast)
    t_hp_frozen, _ = timed(lambda: head_probe(frozen_net, frozen, y_train, y_val, hp_one.hp, 0,
                                              eval_bs, ws.autocast), device)
    print(f"one HP epoch (incl. its train/val evaluation): cached {t_hp_cached * 1e3:.1f} ms, "
          f"through the frozen backbone {t_hp_frozen:.2f} s -> ratio "
          f"{t_hp_frozen / t_hp_cached:.0f}x (target >= 100x)")

    # One FT epoch, then the same number of steps of forward/backward/step alone on a batch
    # prepared in advance: the difference is what the input pipeline costs.
    net = fresh_net()
    tuner = Finetuner(net, task.splits.train, task.splits.val, task.pipeline, cfg.ft, 0, eval_bs,
                      ws.autocast)
    tuner.train_epoch()  # warm-up (allocator, kernels)
    t_epoch, _ = timed(tuner.train_epoch, device)
    steps = list(epoch_batches(len(task.splits.train), int(cfg.ft.batch_size),
                               torch.Generator().manual_seed(1)))
    gen = torch.Generator().manual_seed(2)
    t_inputs, _ = timed(lambda: [task.pipeline(task.splits.train.x[idx], augment=True, gen=gen)
                                 for idx in steps], device)
    inputs = task.pipeline(task.splits.train.x[steps[0]], augment=True, gen=gen)
    labels = task.splits.train.y[steps[0].to(task.splits.train.y.device)]

    def model_only() -> None:
        for _ in steps:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=ws.autocast):
                logits = net(inputs)
            loss = F.cross_entropy(logits.float(), labels)
            tuner.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            tuner.optimizer.step()

    t_model, _ = timed(model_only, device)
    outside = max(0.0, t_epoch - t_model) / t_epoch
    direct = t_inputs / (t_inputs + t_model)  # robust when other jobs load the machine
    print(f"one FT epoch ({len(steps)} steps of {cfg.ft.batch_size}): {t_epoch:.2f} s; model "
          f"forward/backward/step alone {t_model:.2f} s; input pipeline alone {t_inputs:.3f} s; "
          f"share outside the model {outside:.1%} by difference, {direct:.1%} measured directly "
          f"(target <= 10%)")

    net = fresh_net(seed=7)
    start = time.perf_counter()
    cached = CachedOutputs(outputs.outputs, device) if isinstance(outputs, CachedOutputs) else outputs
    hp = head_probe(net, cached, y_train, y_val, cfg.hp, 7, eval_bs, ws.autocast)
    result = Finetuner(net, task.splits.train, task.splits.val, task.pipeline, cfg.ft, 7, eval_bs,
                       ws.autocast).run()
    t_trial = time.perf_counter() - start
    test_acc = accuracy(net, task.splits.test, task.pipeline, eval_bs, ws.autocast)
    print(f"one trial, tau=4, {cfg.ft.epochs} FT epochs: HP val acc {hp.val.accuracy:.4f}, "
          f"energy {hp.train.energy:.3f}, FT val acc {result.val_acc_curve[-1]:.4f}, "
          f"test acc {test_acc:.4f}, {t_trial:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": str(device), "features_s": t_feat, "hp_epoch_cached_s": t_hp_cached,
            "hp_epoch_frozen_s": t_hp_frozen, "hp_ratio": t_hp_frozen / t_hp_cached,
            "ft_epoch_s": t_epoch, "ft_model_only_s": t_model, "ft_inputs_only_s": t_inputs,
            "ft_share_outside_model": outside,
            "ft_share_inputs_direct": direct, "trial_tau4_val_acc": result.val_acc_curve[-1],
            "trial_tau4_test_acc": test_acc, "trial_s": t_trial}, indent=2))


if __name__ == "__main__":
    main()
