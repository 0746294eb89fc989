"""Pretrain a small model of two more backbone families on split-CIFAR's source classes, then run
the low-data schedules with each.

Pretrained weights cannot be downloaded here, so this makes its own: a timm ``resnet10t`` (a conv
net, ``backbone=timm``) and a small Hugging Face ViT (``backbone=hf``, patch 4, 32x32 inputs),
each trained from scratch on CIFAR-10's train split restricted to the source classes
{airplane, automobile, bird, cat, deer} at 32x32 (``--per-class`` images per class, random crop and
flip, SGD with a cosine schedule, ``--epochs`` epochs). Each is saved the way its family loads a
local model, with its input spec (32px, the CIFAR mean/std):

- ``OUT/resnet10t_src5/``: ``timm.models.save_for_hf`` (config.json with the pretrained_cfg,
  model.safetensors); use it as ``backbone=timm backbone.name=resnet10t backbone.weights=DIR``;
- ``OUT/vit_src5/``: ``save_pretrained`` + ``preprocessor_config.json``; use it as
  ``backbone=hf backbone.name=DIR backbone.weights=hub``;
- ``OUT/<model>.json``: the record (architecture, classes, epochs, source test accuracy, time).

Then every named schedule of ``--schedules`` runs as one trial per seed of
``+experiment=split_cifar_lowdata`` with each family (``python -m hpsearch ... schedule=NAME
search_space=none study.n_trials=1 seed=S``), into one SQLite storage, and a table per family
(FT validation and test accuracy, energy, adaptation; mean ± std over seeds; Spearman ρ of
adaptation vs energy over the trials) is printed and written to ``OUT/lowdata_tables.md``.

    nice -n 5 python benchmarks/pretrain_source.py --data-root ../shared/data/cifar10

The weights stay under ``--out`` (default storage/pretrained, not committed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SOURCE = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2470, 0.2435, 0.2616]
SCHEDULES = ["ft_only", "early_hp", "lp_ft"]
# The small ViT: 4 blocks of width 96 over 8x8 patches of 4 pixels (+ CLS), ~0.3M parameters.
VIT = dict(
    hidden_size=96,
    num_hidden_layers=4,
    num_attention_heads=3,
    intermediate_size=192,
    image_size=32,
    patch_size=4,
)


def source_splits(data_root: str, per_class: int, cache_dir: str):
    from omegaconf import OmegaConf

    from hpsearch.config import DataConfig
    from hpsearch.data import load_splits

    data = OmegaConf.structured(DataConfig)
    data.format, data.root, data.classes = "imagefolder", data_root, SOURCE
    data.train_per_class, data.val_per_class = per_class, 50
    return data, load_splits(data, cache_dir)


class VitClassifier:
    """The HF ViT + a linear head on the CLS token (the hf family's z)."""

    @staticmethod
    def build(n_classes: int):
        import torch
        from transformers import ViTConfig, ViTModel

        vit = ViTModel(ViTConfig(**VIT), add_pooling_layer=False)
        head = torch.nn.Linear(VIT["hidden_size"], n_classes)

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.vit, self.head = vit, head

            def forward(self, x):
                return self.head(self.vit(pixel_values=x).last_hidden_state[:, 0])

        return Net()


def pretrain(kind: str, args, data, splits) -> dict:
    import torch
    import torch.nn.functional as F

    from hpsearch.data import InputPipeline

    torch.manual_seed(args.seed)
    if kind == "resnet10t":
        import timm

        model = timm.create_model("resnet10t", num_classes=len(SOURCE))
        lr, wd = 0.1, 5e-4
    else:
        model = VitClassifier.build(len(SOURCE))
        lr, wd = 1e-3, 0.05
    pipe = InputPipeline(data, splits.kind, torch.device("cpu"))
    x, y = splits.train.x, splits.train.y
    steps_per_epoch = math.ceil(len(x) / args.batch_size)
    total = steps_per_epoch * args.epochs
    if kind == "resnet10t":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), args.batch_size):
            idx = order[i : i + args.batch_size]
            loss = F.cross_entropy(model(pipe(x[idx], augment=True, gen=gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(model, pipe, splits.val)
        print(f"{kind} epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f} val acc {acc:.3f}")
    seconds = time.perf_counter() - start
    test_acc = accuracy(model, pipe, splits.test)
    out = args.out / f"{kind}_src5"
    if kind == "resnet10t":
        from timm.models import save_for_hf

        save_for_hf(
            model,
            str(out),
            data_config={
                "input_size": (3, 32, 32),
                "mean": tuple(CIFAR_MEAN),
                "std": tuple(CIFAR_STD),
                "interpolation": "bilinear",
                "crop_pct": 1.0,
            },
            safe_serialization=True,
        )
    else:
        model.vit.save_pretrained(out)
        processor = {
            "image_processor_type": "ViTImageProcessor",
            "do_resize": True,
            "size": {"height": 32, "width": 32},
            "resample": 2,
            "do_normalize": True,
            "image_mean": CIFAR_MEAN,
            "image_std": CIFAR_STD,
        }
        (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    record = {
        "arch": "timm resnet10t" if kind == "resnet10t" else f"transformers ViTModel {VIT}",
        "weights": str(out),
        "num_classes": len(SOURCE),
        "classes": SOURCE,
        "train_images": len(x),
        "input": "32x32 RGB, CIFAR-10 mean/std normalisation",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": "SGD lr 0.1 momentum 0.9 wd 5e-4" if kind == "resnet10t" else "AdamW 1e-3",
        "schedule": "one-cycle (15% warm-up, cosine)",
        "params": sum(p.numel() for p in model.parameters()),
        "test_acc_source": round(test_acc, 4),
        "pretrain_seconds": round(seconds, 1),
        "seed": args.seed,
    }
    (args.out / f"{kind}_src5.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record))
    return record


def accuracy(model, pipe, split) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(split.x), 500):
            logits = model(pipe(split.x[i : i + 500]))
            correct += int((logits.argmax(1) == split.y[i : i + 500]).sum())
    return correct / len(split.x)


def family_overrides(args) -> dict[str, list[str]]:
    return {
        "timm resnet10t": [
            "backbone=timm",
            "backbone.name=resnet10t",
            f"backbone.weights={args.out / 'resnet10t_src5'}",
        ],
        "hf ViT": [
            "backbone=hf",
            f"backbone.name={args.out / 'vit_src5'}",
            "backbone.weights=hub",
        ],
    }


def run_schedules(args) -> None:
    storage = f"sqlite:///{args.out / 'lowdata.db'}"
    for family, overrides in family_overrides(args).items():
        if family.split()[0] not in args.families:
            continue
        for schedule in args.schedules:
            for seed in args.seeds:
                name = f"{family.split()[0]}_{schedule}_s{seed}"
                if _done(storage, name):
                    continue
                cmd = [
                    sys.executable,
                    "-m",
                    "hpsearch",
                    "+experiment=split_cifar_lowdata",
                    f"data.root={args.data_root}",
                    *overrides,
                    f"schedule={schedule}",
                    "search_space=none",
                    "study.n_trials=1",
                    f"seed={seed}",
                    f"study.name={name}",
                    f"storage.url={storage}",
                    "progress=false",
                ]
                start = time.perf_counter()
                env = {**os.environ, "PYTHONPATH": str(REPO)}
                done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
                print(f"{name}: exit {done.returncode} in {time.perf_counter() - start:.0f}s")
                if done.returncode != 0:
                    print(done.stderr[-2000:])


def _done(storage: str, name: str) -> bool:
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return False
    return any(t.state.name == "COMPLETE" for t in study.trials)


def tables(args) -> str:
    import optuna
    from scipy.stats import spearmanr

    storage = f"sqlite:///{args.out / 'lowdata.db'}"
    out = []
    for family in family_overrides(args):
        rows, energy, adapt = [], [], []
        for schedule in args.schedules:
            trials = []
            for seed in args.seeds:
                name = f"{family.split()[0]}_{schedule}_s{seed}"
                try:
                    study = optuna.load_study(study_name=name, storage=storage)
                except KeyError:
                    continue
                trials += [t for t in study.trials if t.state.name == "COMPLETE"]
            if not trials:
                continue
            attrs = lambda key, trials=trials: [float(t.user_attrs[key]) for t in trials]
            copied = attrs("adaptation_l2")
            if schedule != "partial_copy":  # same z (every stage copied): comparable adaptation
                energy += attrs("energy")
                adapt += copied
            rows.append(
                f"| {schedule} | {len(trials)} | {_ms(attrs('ft_val_acc'), 100)} | "
                f"{_ms(attrs('test_acc'), 100)} | {_ms(attrs('energy'))} | {_ms(copied)} |"
            )
        if not rows:
            continue
        rho = spearmanr(energy, adapt).statistic if len(energy) > 2 else float("nan")
        out += [
            f"#### {family}",
            "",
            "| schedule | n | FT val acc (%) | test acc (%) | energy | ‖z_T − z_0‖ |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Spearman ρ(adaptation, energy) over the {len(energy)} trials that copy every "
            f"stage: {rho:.2f}.",
            "",
        ]
    return "\n".join(out)


def _ms(values: list[float], scale: float = 1.0) -> str:
    import statistics

    m = statistics.fmean(values) * scale
    s = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{m:.1f} ± {s:.1f}" if scale != 1.0 else f"{m:.3f} ± {s:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True, help="CIFAR-10 ImageFolder root")
    p.add_argument("--out", type=Path, default=REPO / "storage" / "pretrained")
    p.add_argument("--models", nargs="+", default=["resnet10t", "vit"])
    p.add_argument("--per-class", type=int, default=1000, help="source train images per class")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-pretrain", action="store_true", help="use the models already in --out")
    p.add_argument("--skip-schedules", action="store_true")
    p.add_argument("--schedules", nargs="+", default=SCHEDULES)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--families", nargs="+", default=["timm", "hf"], help="schedules of these")
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.data_root = str(Path(args.data_root).resolve())
    from hpsearch.app import set_openmp_defaults

    set_openmp_defaults()  # OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP (shared cores)
    import torch

    torch.set_num_threads(args.threads)
    if not args.skip_pretrain:
        data, splits = source_splits(args.data_root, args.per_class, str(REPO / "storage/cache"))
        for kind in args.models:
            pretrain(kind, args, data, splits)
    if not args.skip_schedules:
        run_schedules(args)
    text = tables(args)
    (args.out / "lowdata_tables.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
