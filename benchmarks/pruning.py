"""Pruning benchmark: what each pruner saves in FT epochs, and what it costs in accuracy.

For every seed, the same study (search space, sampler seed, trial budget) runs once per arm:

    none           no pruning
    median         MedianPruner on FT epochs
    hyperband      HyperbandPruner on FT epochs
    energy         EnergyPruner at the gate between HP and FT
    energy+median  EnergyPruner at the gate, MedianPruner on the FT epochs after it

Per run it records the best validation accuracy, the test accuracy of that trial, the FT epochs
run by all trials together and the wall time; per arm it reports mean ± std over seeds and the
paired comparison with `none`. Output: a JSON file and a markdown table.

The split-CIFAR benchmark (../shared/BENCHMARK.md):

    python benchmarks/pruning.py --data-root ../shared/data/cifar10 \
        --weights ../shared/weights/resnet18_cifar10_src5.pt \
        --out-json benchmarks/results/pruning.json --out-md benchmarks/results/pruning.md \
        --trials 10 --ft-epochs 3 --seeds 0 1 --device cpu

`--smoke` runs the whole pipeline (every arm) on generated tiny images and a random ResNet-18 in
under a minute; its numbers mean nothing. Arms of one seed are interleaved, so a change in the
machine's load over the run hits every arm alike; the data is decoded and the copied-part
features cached once before any arm is timed.

`--replay TABLE [TABLE ...]` measures the arms without training: each TABLE is a stored study
whose trials ran every FT epoch (a SQLite file or a storage URL; `benchmarks/tables/` holds the
ones built for this benchmark), and every arm is replayed on `--orders` random orders of
`--budget` of its trials (`hpsearch.review.replay`, the engine of `mode=replay`). The pruner
flags apply when given; otherwise each arm has its config defaults (`pruner=NAME`). The results
of today's pruners on every table:

    python benchmarks/pruning.py --replay benchmarks/tables/toy.db benchmarks/tables/lowdata.db \
        --out-json benchmarks/results/replay.json --out-md benchmarks/results/replay.md
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from hpsearch.app import compose_config  # noqa: E402
from hpsearch.config import PrunerConfig  # noqa: E402
from hpsearch.errors import HpsearchError  # noqa: E402
from hpsearch.models import build_transfer_net  # noqa: E402
from hpsearch.space import apply_params, parse_search_space  # noqa: E402
from hpsearch.study.worker import run_search  # noqa: E402
from hpsearch.trial import Workspace  # noqa: E402

log = logging.getLogger("benchmarks.pruning")

ARMS: dict[str, list[str]] = {
    "none": ["pruner=none"],
    "median": ["pruner=median"],
    "hyperband": ["pruner=hyperband"],
    "energy": ["pruner=energy"],
    "energy+median": ["pruner=energy", "pruner.ft=median"],
    "energy+none": ["pruner=energy", "pruner.ft=none"],
    "hp_rule": ["pruner=hp_rule"],
    "epoch_rule": ["pruner=epoch_rule"],
    "rules": ["pruner=rules"],
}
LIVE_ARMS = ["none", "median", "hyperband", "energy", "energy+median"]
SMOKE_CLASSES = ("dog", "frog", "horse", "ship", "truck")  # the split_cifar experiment's classes
PRUNER = PrunerConfig()  # the benchmark's pruner defaults are the product's
# The live mode's pruner settings unless given (--replay: each arm's config unless given).
LIVE_DEFAULTS = {
    "pruner_startup": PRUNER.n_startup_trials,
    "min_prob": PRUNER.min_prob,
    "top_k": PRUNER.top_k,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", help="ImageFolder root with train/ and test/ (CIFAR-10)")
    ap.add_argument("--weights", help="ResNet-18 state_dict pretrained on the source classes")
    ap.add_argument("--out-json", required=True, help="where the JSON results go")
    ap.add_argument("--out-md", required=True, help="where the markdown table goes")
    ap.add_argument("--trials", type=int, default=10, help="trial budget per study")
    ap.add_argument("--ft-epochs", type=int, default=3, help="FT epochs of an unpruned trial")
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1],
        help="study seeds (sampler and trials); every arm runs every seed",
    )
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument(
        "--arms",
        nargs="+",
        default=None,
        choices=list(ARMS),
        help=f"default: {' '.join(LIVE_ARMS)} (live); replay.pruners' (--replay)",
    )
    ap.add_argument(
        "--search-space",
        default="resnet_pruning",
        help="conf/search_space/NAME.yaml, the same for every arm",
    )
    ap.add_argument(
        "--pruner-startup",
        type=int,
        default=None,
        help="completed trials before any pruner prunes (median, energy); "
        f"default {LIVE_DEFAULTS['pruner_startup']} (live)",
    )
    ap.add_argument(
        "--sampler-startup", type=int, default=5, help="random trials before TPE models the space"
    )
    ap.add_argument(
        "--min-prob",
        type=float,
        nargs="+",
        default=None,
        help="energy pruner: prune below this P(beats the top_k-th best); "
        f"default {LIVE_DEFAULTS['min_prob']} (live); --replay takes several "
        "values and replays each energy arm at each (the cost-vs-regret "
        "frontier)",
    )
    ap.add_argument(
        "--top-k",
        type=int,
        default=None,
        help=f"energy pruner: rank to reach; default {LIVE_DEFAULTS['top_k']} (live)",
    )
    ap.add_argument(
        "--workdir", default=None, help="storage and caches (default: a fresh temporary directory)"
    )
    ap.add_argument(
        "--override",
        nargs="*",
        default=[],
        help="extra Hydra overrides for every run, e.g. ft.batch_size=256",
    )
    ap.add_argument(
        "--continue",
        dest="resume",
        action="store_true",
        help="keep the runs already in --out-json (same settings) and run only the "
        "missing (arm, seed) pairs: a stopped or timed-out run goes on",
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="generated tiny data and a random ResNet-18: checks the pipeline only",
    )
    ap.add_argument(
        "--replay",
        nargs="+",
        metavar="TABLE",
        default=None,
        help="replay the arms on these stored studies instead of running searches",
    )
    ap.add_argument(
        "--study", default=None, help="--replay: the study in each TABLE (default: its only study)"
    )
    ap.add_argument(
        "--orders",
        type=int,
        default=None,
        help="--replay: random orders per arm (default: replay.orders)",
    )
    ap.add_argument(
        "--budget",
        type=int,
        default=None,
        help="--replay: trials per order (default: replay.budget)",
    )
    ap.add_argument(
        "--processes",
        type=int,
        default=None,
        help="--replay: worker processes (default: replay.processes, 0 = all CPUs)",
    )
    ap.add_argument(
        "--frontier",
        action="store_true",
        help="--replay: also each arm at every value of its main setting (min_prob, the "
        "quantile); writes the cost-vs-regret figure of each table next to --out-md",
    )
    ap.add_argument(
        "--prior",
        nargs="+",
        metavar="TABLE",
        default=[],
        help="--replay: stored studies the energy arms take as pruner.prior_studies (copied "
        "into one temporary storage); a TABLE that is also replayed is left out of its own prior",
    )
    args = ap.parse_args(argv)
    if args.replay:
        return args
    args.arms = args.arms or LIVE_ARMS
    if args.min_prob is not None:
        if len(args.min_prob) > 1:
            ap.error("--min-prob takes one value in the live mode (several with --replay)")
        args.min_prob = args.min_prob[0]
    for key, value in LIVE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.smoke:
        args.trials, args.ft_epochs, args.seeds = min(args.trials, 3), 2, args.seeds[:1]
        args.pruner_startup, args.sampler_startup = 2, 2
    elif not (args.data_root and args.weights):
        ap.error("--data-root and --weights are required (or --smoke)")
    if args.trials < 1 or args.ft_epochs < 1:
        ap.error("--trials and --ft-epochs must be >= 1")
    return args


def make_smoke_inputs(root: Path) -> tuple[Path, Path]:
    """Tiny random JPEGs in ImageFolder layout and a random ResNet-18 state_dict."""
    import torchvision
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    data = root / "smoke_data"
    for split, n in (("train", 12), ("test", 4)):
        for c, name in enumerate(SMOKE_CLASSES):
            folder = data / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                # a class-dependent colour plus noise, so there is something to learn
                base = torch.full((32, 32, 3), 40.0 * c + 30)
                pixels = (base + 40 * torch.randn(32, 32, 3, generator=gen)).clamp(0, 255)
                Image.fromarray(pixels.to(torch.uint8).numpy()).save(folder / f"{i:04d}.jpg")
    weights = root / "smoke_resnet18.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), weights)
    return data, weights


def base_overrides(args: argparse.Namespace, workdir: Path) -> list[str]:
    out = [
        "+experiment=split_cifar",
        f"data.root={args.data_root}",
        f"backbone.weights={args.weights}",
        f"study.n_trials={args.trials}",
        f"ft.epochs={args.ft_epochs}",
        f"device={args.device}",
        "progress=false",
        f"search_space={args.search_space}",
        f"study.n_startup_trials={args.sampler_startup}",
        f"pruner.n_startup_trials={args.pruner_startup}",
        f"storage.url=sqlite:///{workdir / 'pruning.db'}",
        f"storage.cache_dir={workdir / 'cache'}",
        f"storage.artifacts={workdir / 'artifacts'}",
    ]
    if args.smoke:
        out += [
            "data.train_per_class=8",
            "data.val_per_class=4",
            "data.image_size=16",
            "data.eval_batch_size=64",
            "hp.batch_size=20",
            "ft.batch_size=20",
        ]
    return out + list(args.override)


def arm_overrides(arm: str, args: argparse.Namespace, min_prob: float | None = None) -> list[str]:
    """The arm's config overrides; ``min_prob`` (replay) stands for ``args.min_prob``."""
    out = list(ARMS[arm])
    if arm.startswith("energy"):
        prob = min_prob if min_prob is not None else args.min_prob
        out += [
            f"pruner.{key}={value}"
            for key, value in (("min_prob", prob), ("top_k", args.top_k))
            if value is not None
        ]
    return out


def replay_arms(args: argparse.Namespace, common: list[str]) -> dict[str, Any]:
    """Arm name -> config for a replay; with several ``--min-prob`` values each energy arm is
    replayed at each, as ``ARM min_prob=V``."""
    probs = args.min_prob if args.min_prob and len(args.min_prob) > 1 else None
    arms: dict[str, Any] = {}
    for arm in args.arms or list(compose_config(common).replay.pruners):
        if arm.startswith("energy") and probs:
            for prob in probs:
                arms[f"{arm} min_prob={prob:g}"] = compose_config(
                    common + arm_overrides(arm, args, prob)
                )
        else:
            one = args.min_prob[0] if args.min_prob else None
            arms[arm] = compose_config(common + arm_overrides(arm, args, one))
    return arms


def compose(overrides: list[str], smoke: bool) -> DictConfig:
    """The run's config; the smoke run also caps HP at 2 epochs (its numbers mean nothing)."""
    cfg = compose_config(overrides)
    if smoke:
        cfg.search_space["hp.epochs"] = {"type": "int", "low": 0, "high": 2}
    return cfg


def warm_caches(cfg: DictConfig) -> None:
    """Decode the data and cache the copied-part outputs of every layers_copied in the space,
    so that no arm pays for them inside its timed run."""
    ws = Workspace(cfg)
    space = parse_search_space(cfg.search_space, cfg)
    dist = space.get("backbone.layers_copied")
    if dist is None:
        choices = [int(cfg.backbone.layers_copied)]
    elif hasattr(dist, "choices"):
        choices = [int(c) for c in dist.choices]
    else:
        choices = list(range(int(dist.low), int(dist.high) + 1, int(dist.step or 1)))
    for k in choices:
        cfg_k = apply_params(cfg, {"backbone.layers_copied": k})
        task = ws.task(cfg_k)
        net = build_transfer_net(
            task.pretrained, cfg_k.backbone, cfg_k.head, task.input_dim, task.splits.n_classes, 0
        ).to(ws.device)
        ws.copied_outputs(cfg_k, task, net)


def summarize(study: optuna.Study, wall_s: float) -> dict[str, Any]:
    """The run's numbers, and one compact record per trial (to see what each pruner did)."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(done, key=lambda t: t.value) if done else None
    records = []
    for t in trials:
        a = t.user_attrs
        records.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "ft_epochs_run": int(a.get("ft_epochs_run", len(t.intermediate_values))),
                "pruned_at": a.get("pruned_at"),
                "test_acc": a.get("test_acc"),
                "energy": a.get("energy"),
                "hp_val_acc": a.get("hp_val_acc"),
                "adaptation_l2": a.get("adaptation_l2"),
                "gate_decision": a.get("gate_decision"),
                "gate_predicted_objective": a.get("gate_predicted_objective"),
                "gate_probability": a.get("gate_probability"),
                "gate_threshold": a.get("gate_threshold"),
                "params": t.params,
                "wall_s": t.duration.total_seconds() if t.duration else None,
            }
        )
    return {
        "best_val_acc": best.value if best else None,
        "best_test_acc": best.user_attrs.get("test_acc") if best else None,
        "best_trial": best.number if best else None,
        "ft_epochs": sum(r["ft_epochs_run"] for r in records),
        "complete": len(done),
        "pruned_at_gate": sum(r["pruned_at"] == "gate" for r in records),
        "pruned_in_ft": sum(r["state"] == "PRUNED" and r["pruned_at"] != "gate" for r in records),
        "failed": sum(r["state"] == "FAIL" for r in records),
        "wall_s": wall_s,
        "bound_c_hat": study.user_attrs.get("bound_c_hat"),
        "spearman_energy_adaptation": study.user_attrs.get("bound_spearman_energy_adaptation"),
        "trials": records,
    }


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(runs: list[dict[str, Any]], arms: list[str]) -> dict[str, dict[str, Any]]:
    """Per arm: mean ± std over seeds, and the paired comparison with `none` (same seed)."""
    by = {(r["arm"], r["seed"]): r for r in runs}
    out = {}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        row: dict[str, Any] = {"seeds": [r["seed"] for r in mine]}
        for key in (
            "best_val_acc",
            "best_test_acc",
            "ft_epochs",
            "wall_s",
            "pruned_at_gate",
            "pruned_in_ft",
            "failed",
        ):
            row[key], row[key + "_std"] = _mean_std([r[key] for r in mine])
        base = [(r, by.get(("none", r["seed"]))) for r in mine]
        base = [
            (r, b)
            for r, b in base
            if b is not None and b["best_val_acc"] is not None and r["best_val_acc"] is not None
        ]
        row["delta_val_vs_none"], _ = _mean_std(
            [r["best_val_acc"] - b["best_val_acc"] for r, b in base]
        )
        row["ft_epochs_vs_none"], _ = _mean_std(
            [r["ft_epochs"] / b["ft_epochs"] for r, b in base if b["ft_epochs"]]
        )
        out[arm] = row
    return out


def targets(arms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets: energy within 0.3 points of none at <= 1/3 of its FT epochs, and
    fewer FT epochs than hyperband at equal accuracy (within 0.3 points)."""
    energy, hyperband = arms.get("energy"), arms.get("hyperband")
    out: dict[str, Any] = {}
    if energy and energy["delta_val_vs_none"] is not None:
        out["energy_within_0.3_points_of_none"] = energy["delta_val_vs_none"] >= -0.003
        out["energy_at_most_a_third_of_none_ft_epochs"] = energy["ft_epochs_vs_none"] <= 1 / 3
    if energy and hyperband and None not in (energy["best_val_acc"], hyperband["best_val_acc"]):
        out["energy_fewer_ft_epochs_than_hyperband"] = energy["ft_epochs"] < hyperband["ft_epochs"]
        out["energy_accuracy_vs_hyperband_points"] = 100 * (
            energy["best_val_acc"] - hyperband["best_val_acc"]
        )
    return out


def _pct(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{100 * mean:.2f} ± {100 * (std or 0):.2f}"


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"### Pruning benchmark: {s['experiment']}, {s['trials']} trials × {s['ft_epochs']} FT "
        f"epochs, seeds {', '.join(map(str, s['seeds']))}, device {s['device']}, search space "
        f"{s['search_space']}" + ("" if s["complete"] else " (INCOMPLETE: runs still missing)"),
        "",
        "| arm | best val acc (%) | its test acc (%) | Δ val vs none (pts) | FT epochs "
        "| FT epochs vs none | wall (s) | pruned gate / FT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, a in result["arms"].items():
        delta = "-" if a["delta_val_vs_none"] is None else f"{100 * a['delta_val_vs_none']:+.2f}"
        ratio = "-" if a["ft_epochs_vs_none"] is None else f"{a['ft_epochs_vs_none']:.2f}"
        lines.append(
            f"| {arm} | {_pct(a['best_val_acc'], a['best_val_acc_std'])} "
            f"| {_pct(a['best_test_acc'], a['best_test_acc_std'])} | {delta} "
            f"| {a['ft_epochs']:.1f} ± {a['ft_epochs_std']:.1f} | {ratio} "
            f"| {a['wall_s']:.0f} ± {a['wall_s_std']:.0f} "
            f"| {a['pruned_at_gate']:.1f} / {a['pruned_in_ft']:.1f} |"
        )
    lines += [
        "",
        "Mean ± std over seeds; Δ and ratios are paired by seed. "
        f"Pruners start after {s['pruner_startup']} completed trials; energy: min_prob="
        f"{s['min_prob']}, top_k={s['top_k']}. Targets: "
        + ", ".join(
            f"{k}={v if not isinstance(v, float) else round(v, 2)}"
            for k, v in result["targets"].items()
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.replay:
        try:
            text = replay_tables(args)
        except HpsearchError as err:
            print(f"pruning benchmark: error: {err}", file=sys.stderr)
            return 2
        print(text)
        return 0
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hpsearch-pruning-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "pruning.db").unlink(missing_ok=True)  # fresh studies, never a resumed one
    if args.smoke:
        data, weights = make_smoke_inputs(workdir)
        args.data_root, args.weights = str(data), str(weights)
    base = base_overrides(args, workdir)
    runs = previous_runs(args) if args.resume else []
    done = {(r["arm"], r["seed"]) for r in runs}
    text = write_outputs(args, base, args.device, runs)
    try:
        warm_caches(compose(base + ["pruner=none"], args.smoke))
        for seed in args.seeds:
            for arm in args.arms:
                if (arm, seed) in done:
                    continue
                cfg = compose(
                    base
                    + arm_overrides(arm, args)
                    + [f"seed={seed}", f"study.name=pruning-{arm}-seed{seed}"],
                    args.smoke,
                )
                log.info("=== arm %s, seed %d ===", arm, seed)
                start = time.perf_counter()
                study = run_search(cfg)
                runs.append(
                    {"arm": arm, "seed": seed, **summarize(study, time.perf_counter() - start)}
                )
                text = write_outputs(args, base, str(Workspace(cfg).device), runs)
    except HpsearchError as err:
        print(f"pruning benchmark: error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0


def previous_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs of an earlier invocation with the same settings, from --out-json."""
    path = Path(args.out_json)
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    mine = {
        "trials": args.trials,
        "ft_epochs": args.ft_epochs,
        "search_space": args.search_space,
        "pruner_startup": args.pruner_startup,
        "sampler_startup": args.sampler_startup,
        "min_prob": args.min_prob,
        "top_k": args.top_k,
    }
    differ = {
        k: (old["settings"].get(k), v) for k, v in mine.items() if old["settings"].get(k) != v
    }
    if differ:
        raise SystemExit(f"--continue: {path} was made with other settings {differ}")
    return [r for r in old["runs"] if r["arm"] in args.arms and r["seed"] in args.seeds]


def write_outputs(
    args: argparse.Namespace, base: list[str], device: str, runs: list[dict[str, Any]]
) -> str:
    """Write the JSON and the markdown of the runs so far (after every run: a long benchmark
    that stops early still leaves its results); returns the markdown."""
    arm_names = [a for a in args.arms if any(r["arm"] == a for r in runs)]
    arms = aggregate(runs, arm_names)
    result = {
        "settings": {
            "experiment": "smoke (generated data)" if args.smoke else "split_cifar",
            "trials": args.trials,
            "ft_epochs": args.ft_epochs,
            "seeds": args.seeds,
            "device": device,
            "arms": args.arms,
            "search_space": args.search_space,
            "pruner_startup": args.pruner_startup,
            "sampler_startup": args.sampler_startup,
            "min_prob": args.min_prob,
            "top_k": args.top_k,
            "overrides": base,
            "torch": torch.__version__,
            "optuna": optuna.__version__,
            "host": platform.node(),
            "complete": len(runs) == len(args.arms) * len(args.seeds),
        },
        "arms": arms,
        "targets": targets(arms),
        "runs": runs,
    }
    text = markdown(result)
    for path, content in ((args.out_json, json.dumps(result, indent=1)), (args.out_md, text)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(content)
    return text


# ---------------------------------------------------------------------------- --replay


def table_url(table: str) -> str:
    """A storage URL for TABLE: a URL as given, a path as a SQLite URL (which must exist)."""
    if "://" in table:
        return table
    path = Path(table).expanduser().resolve()
    if not path.is_file():
        raise HpsearchError(f"--replay {table}: no such file (a SQLite table or a storage URL)")
    return f"sqlite:///{path}"


def table_study(url: str, name: str | None) -> optuna.Study:
    from hpsearch.review.report import load_existing_study
    from hpsearch.study.storage import open_storage, safe_url

    if name is None:
        names = sorted(s.study_name for s in open_storage(url).get_all_studies())
        if len(names) != 1:
            raise HpsearchError(
                f"{safe_url(url)} holds {len(names)} studies "
                f"({', '.join(names) or 'none'}); name one with --study"
            )
        name = names[0]
    return load_existing_study(url, name)


def prior_overrides(tables: list[str], workdir: Path) -> list[str]:
    """The overrides that give the energy arms every study of ``tables`` as their prior, each
    copied into one SQLite storage under ``workdir`` (pruner.prior_storage takes one URL)."""
    if not tables:
        return []
    url = f"sqlite:///{workdir / ('prior-' + str(len(list(workdir.iterdir()))) + '.db')}"
    names = []
    for table in tables:
        for study in optuna.get_all_study_names(table_url(table)):
            name = f"{Path(table).stem}__{study}"
            optuna.copy_study(
                from_study_name=study,
                from_storage=table_url(table),
                to_storage=url,
                to_study_name=name,
            )
            names.append(name)
    return [f"pruner.prior_storage={url}", f"pruner.prior_studies=[{','.join(names)}]"]


def replay_tables(args: argparse.Namespace) -> str:
    """Replay the arms on every table; write --out-json and --out-md; return the markdown."""
    from hpsearch.review import plots
    from hpsearch.review import replay as rp
    from hpsearch.study.storage import safe_url
    from hpsearch.tables import markdown_table

    sections, results = [], {}
    workdir = Path(tempfile.mkdtemp(prefix="replay-prior-"))
    for table_arg in args.replay:
        url = table_url(table_arg)
        study = table_study(url, args.study)
        replay_args = [
            f"{key}={value}"
            for key, value in (
                ("replay.orders", args.orders),
                ("replay.budget", args.budget),
                ("replay.processes", args.processes),
            )
            if value is not None
        ]
        common = [
            "mode=replay",
            f"study.name={study.study_name}",
            *replay_args,
            *(
                [f"pruner.n_startup_trials={args.pruner_startup}"]
                if args.pruner_startup is not None
                else []
            ),
            *args.override,
        ]
        prior = prior_overrides([p for p in args.prior if p != table_arg], workdir)
        common += prior
        cfg = compose_config(common)
        pruners = replay_arms(args, common)
        if args.frontier:
            pruners = rp.frontier_arms(pruners)
        table = rp.load_table(study)
        r = cfg.replay
        log.info(
            "=== replay of %s: %d trials x %d FT epochs, arms %s ===",
            table_arg,
            len(table.trials),
            table.ft_epochs,
            ", ".join(pruners),
        )
        budget = rp.resolve_budget(table, r.budget)
        settings, summary = rp.run_replay(
            table,
            pruners,
            int(r.orders),
            budget,
            int(r.seed),
            int(r.processes) or rp.available_cpus(),
        )
        settings["storage"] = safe_url(url)
        settings["prior"] = [p for p in args.prior if p != table_arg]
        figure = rp.cost_vs_regret(summary)
        figure.stem = f"{Path(args.out_md).stem}_{Path(table_arg).stem}"
        figure.title = f"Replay of {Path(table_arg).name}: cost vs regret" + (
            f" (prior: {', '.join(Path(p).name for p in settings['prior'])})"
            if settings["prior"]
            else ""
        )
        Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
        plots.write_png(figure, Path(args.out_md).with_name(f"{figure.stem}.png"))
        results[table_arg] = {
            "settings": settings,
            "pruners": {  # per-order rows left out
                n: {k: v for k, v in row.items() if k != "per_order"} for n, row in summary.items()
            },
        }
        spread = table.spread()
        sections += [
            f"### Replay: `{table_arg}` (study `{table.study_name}`)",
            "",
            f"{len(table.trials)} complete trials × {table.ft_epochs} FT epochs; "
            f"objective best {spread['best']:.4f}, median {spread['median']:.4f}, "
            f"worst {spread['worst']:.4f}. {r.orders} orders × {budget} trials "
            f"(seed {r.seed}); replay wall time {settings['wall_s']:.1f} s with "
            f"{settings['processes']} process(es)"
            + (
                f"; prior: {', '.join(f'`{p}`' for p in settings['prior'])}"
                if settings["prior"]
                else ""
            )
            + ".",
            "",
            *markdown_table(rp.HEADER, rp.summary_rows(summary)),
            "",
            f"![cost vs regret]({figure.stem}.png)",
            "",
            "Settings: "
            + "; ".join(
                f"`{n}` " + ", ".join(f"{k}={v}" for k, v in p.items())
                for n, p in settings["pruners"].items()
                if p
            ),
            "",
        ]
    text = (
        "\n".join(
            sections
            + [
                "Mean over the orders [95% bootstrap interval of the mean]. FT epochs: fraction "
                "of `none` on the same order. Regret: the order's best FT validation accuracy "
                "minus the best the arm kept, in points. `replay s (CPU s)`: replay time per arm, "
                "summed over the orders."
            ]
        )
        + "\n"
    )
    meta = {
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "host": platform.node(),
        "command": " ".join(sys.argv),
    }
    for path, content in (
        (args.out_json, json.dumps({"meta": meta, "tables": results}, indent=1)),
        (args.out_md, text),
    ):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(content)
    return text


if __name__ == "__main__":
    sys.exit(main())
