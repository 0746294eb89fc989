"""Reproduce the head-probing claims of Ren et al. (ICLR 2023) with the named schedules.

The sweep: a linear head probed for τ ∈ {0, 1, 2, 4, 8, 16, 32, converged} with label smoothing
ε ∈ {0, 0.3} (τ = 0 is one arm: no HP, so ε cannot matter), plus ``mlp_head`` and ``partial_copy``
at τ ∈ {0, 4, converged}; every arm for each seed, each one hpsearch trial (the same Objective,
metrics and user attrs as a search). It writes a markdown report — the command, a table of means
± std over seeds, and a verdict per claim — and the τ-curve plot:

  (a) FT accuracy vs τ is non-monotone, best at an intermediate τ;
  (b) feature adaptation ||z_T - z_0|| grows with the energy left after HP (Spearman ρ);
  (c) label smoothing ε keeps energy higher at long τ;
  (d) an MLP head / partial copy lower the energy left after HP.

    # split-CIFAR (../shared/BENCHMARK.md); ~44 trials
    python benchmarks/reproduce.py --data-root ../shared/data/cifar10 \\
        --weights ../shared/weights/resnet18_cifar10_src5.pt --results-md docs/results.md
    # its low-data regime (100 training images per class, FT 5 epochs): ~25 s a trial on a CPU
    python benchmarks/reproduce.py --lowdata --data-root ../shared/data/cifar10 \\
        --weights ../shared/weights/resnet18_cifar10_src5.pt --seeds 0 1 2 \\
        --results-md docs/results.md
    # the toy experiment (synthetic, about a minute)
    python benchmarks/reproduce.py --toy --seeds 0 1 2 3 4 --results-md docs/results.md
    # the whole pipeline (τ ∈ {0, 4, 16, conv}) on generated images and a random ResNet-18,
    # in under a minute of CPU
    python benchmarks/reproduce.py --smoke --out /tmp/smoke

Every trial is stored in an Optuna study (``--storage``, one study per arm and seed, trial 0, so
its seed is the same for every arm); a rerun skips the arms already complete, so an interrupted
run resumes. One arm is the CLI command ``python -m hpsearch <experiment overrides> <arm
overrides> search_space=none study.n_trials=1 seed=S`` (the report lists the overrides).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hpsearch.app import compose_config  # noqa: E402
from hpsearch.errors import HpsearchError  # noqa: E402
from hpsearch.plan import plan_study  # noqa: E402
from hpsearch.stats import mean_interval, ranks  # noqa: E402
from hpsearch.study.answer import points  # noqa: E402
from hpsearch.study.setup import create_study, make_sampler  # noqa: E402
from hpsearch.study.storage import open_storage  # noqa: E402
from hpsearch.trial import Objective, Workspace  # noqa: E402

CONVERGED = None  # τ of the arms probed until converged
LINEAR_TAUS: tuple[int | None, ...] = (0, 1, 2, 4, 8, 16, 32, CONVERGED)
SMOKE_LINEAR_TAUS: tuple[int | None, ...] = (0, 4, 16, CONVERGED)  # every claim still measurable
SIDE_TAUS: tuple[int | None, ...] = (0, 4, CONVERGED)
EPSILONS = (0.0, 0.3)
LONG_TAUS: tuple[int | None, ...] = (16, 32, CONVERGED)  # claim (c)
LOWER_ENERGY_TAUS: tuple[int | None, ...] = (4, CONVERGED)  # claim (d); τ = 0 has no HP to compare
PERMUTATIONS = 10_000  # for the Spearman p-value
ALPHA = 0.05
PEAK_SE = 2.0  # claim (a): the peak must beat both ends by this many standard errors

# What the table shows per arm: (user attr, column title, format).
COLUMNS = (
    ("ft_val_acc", "FT val acc", "{:.4f}"),
    ("test_acc", "test acc", "{:.4f}"),
    ("energy", "energy", "{:.3f}"),
    ("hp_train_acc", "HP train acc", "{:.3f}"),
    ("adaptation_l2", "‖z_T − z_0‖", "{:.3f}"),
    ("adaptation_cos", "cos", "{:.4f}"),
    ("hp_epochs_run", "HP epochs", "{:.1f}"),
)


# --- the sweep -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One schedule of the sweep: a family (linear head, MLP head, partial copy), τ and ε."""

    family: str  # linear | mlp_head | partial_copy
    tau: int | None  # None: until converged
    eps: float

    @property
    def tau_label(self) -> str:
        return "conv" if self.tau is CONVERGED else str(self.tau)

    @property
    def label(self) -> str:
        eps = "" if self.family != "linear" or self.tau == 0 else f"_eps{self.eps:g}"
        return f"{self.family}{eps}_tau{self.tau_label}"

    @property
    def curve(self) -> str:
        """The τ-curve the arm belongs to (τ = 0 of the linear head starts both ε curves)."""
        return f"linear ε={self.eps:g}" if self.family == "linear" else self.family

    def overrides(self) -> list[str]:
        """hpsearch overrides that make one trial of this arm, starting from a named schedule."""
        if self.family == "linear":
            if self.tau == 0:
                return ["schedule=ft_only"]
            if self.tau is CONVERGED:
                name = "hp_smooth" if self.eps > 0 else "lp_ft"
                return [f"schedule={name}", f"schedule.set.hp.label_smoothing={self.eps}"]
            return [
                "schedule=early_hp",
                f"schedule.set.hp.epochs={self.tau}",
                f"schedule.set.hp.label_smoothing={self.eps}",
            ]
        out = [f"schedule={self.family}"]
        if self.tau is not CONVERGED:
            out += ["schedule.set.hp.until_converged=false", f"++schedule.set.hp.epochs={self.tau}"]
        return out


def sweep(n_stages: int, linear_taus: Sequence[int | None] = LINEAR_TAUS) -> list[Arm]:
    """All arms; partial copy needs a backbone with at least two stages."""
    arms = [Arm("linear", 0, 0.0)]
    arms += [Arm("linear", tau, eps) for eps in EPSILONS for tau in linear_taus if tau != 0]
    arms += [Arm("mlp_head", tau, 0.0) for tau in SIDE_TAUS]
    if n_stages >= 2:
        arms += [Arm("partial_copy", tau, 0.0) for tau in SIDE_TAUS]
    return arms


# --- experiments -----------------------------------------------------------------------------


def split_cifar_overrides(args: argparse.Namespace) -> list[str]:
    """The split-CIFAR experiment (``--lowdata``: its low-data regime) on the given files."""
    for flag, path in (("--data-root", args.data_root), ("--weights", args.weights)):
        if not path:
            raise HpsearchError(f"{flag} is required for split-CIFAR (or pass --toy / --smoke)")
    return [
        f"+experiment={args.experiment}",
        f"data.root={Path(args.data_root).resolve()}",
        f"backbone.weights={Path(args.weights).resolve()}",
    ]


SMOKE_SIZE = 16  # px; ResNet-18 still has all its stages (layer3 and layer4 at 1x1)


def make_smoke_data(
    root: Path, train_per_class: int = 6, test_per_class: int = 2, size: int = SMOKE_SIZE
) -> tuple[Path, Path]:
    """A small ImageFolder with the target's class names and a random ResNet-18 state_dict
    (larger sizes serve timing runs where the real data is not at hand)."""
    import torch
    import torchvision
    from torchvision.io import write_png

    classes = ("dog", "frog", "horse", "ship", "truck")
    gen = torch.Generator().manual_seed(0)
    data = root / "images"
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for label, name in enumerate(classes):
            folder = data / split / name
            folder.mkdir(parents=True, exist_ok=True)
            colour = torch.tensor([40 + 40 * label, 200 - 30 * label, 120.0]).view(3, 1, 1)
            for i in range(per_class):
                img = colour + 40 * torch.randn(3, size, size, generator=gen)
                write_png(img.clamp(0, 255).to(torch.uint8), str(folder / f"{i:04d}.png"))
    weights = root / "resnet18_random.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), weights)
    return data, weights


def smoke_overrides(out: Path) -> list[str]:
    data, weights = make_smoke_data(out / "smoke_inputs")
    return [
        "+experiment=split_cifar",
        f"data.root={data}",
        f"backbone.weights={weights}",
        "data.train_per_class=4",
        "data.val_per_class=2",
        "data.test_per_class=2",
        f"data.image_size={SMOKE_SIZE}",
        "data.crop_padding=2",
        "data.eval_batch_size=64",
        "hp.batch_size=10",
        "ft.batch_size=10",
        "hp.max_epochs=6",
    ]


# --- running ---------------------------------------------------------------------------------


def study_name(experiment: str, arm: Arm, seed: int) -> str:
    return f"reproduce:{experiment}:{arm.label}:seed{seed}"


def completed(storage: optuna.storages.BaseStorage, name: str) -> dict[str, Any] | None:
    """The user attrs of the arm's finished trial, or None (a torn study is deleted)."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    done = [
        t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE
    ]
    if done:
        return dict(done[0].user_attrs)
    optuna.delete_study(study_name=name, storage=storage)  # killed mid-trial: run it again
    return None


def run_sweep(args: argparse.Namespace, base: list[str], experiment: str) -> list[dict[str, Any]]:
    """Run every (arm, seed) not yet in storage; return one record per (arm, seed)."""
    storage = (
        optuna.storages.InMemoryStorage()
        if args.storage == "memory"
        else open_storage(args.storage)
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    common = base + [
        f"ft.epochs={args.ft_epochs}",
        f"device={args.device}",
        "progress=false",
        "search_space=none",
        "study.n_trials=1",
        *([] if args.storage == "memory" else [f"storage.url={args.storage}"]),
        f"storage.cache_dir={args.cache_dir}",
    ]
    if args.hp_max_epochs is not None:
        common.append(f"hp.max_epochs={args.hp_max_epochs}")
    probe = compose_config(common)
    from hpsearch.config import backbone_stage_count

    arms = sweep(
        backbone_stage_count(str(probe.backbone.arch), int(probe.backbone.mlp_depth)),
        SMOKE_LINEAR_TAUS if args.smoke else LINEAR_TAUS,
    )
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {a.label for a in arms}
        if unknown:
            raise HpsearchError(
                f"--only: unknown arm(s) {sorted(unknown)}; arms: "
                + ", ".join(a.label for a in arms)
            )
        arms = [a for a in arms if a.label in wanted]
    workspace = Workspace(probe)
    records, todo = [], [(a, s) for a in arms for s in args.seeds]
    start = time.perf_counter()
    ran = 0
    for i, (arm, seed) in enumerate(todo, 1):
        name = study_name(experiment, arm, seed)
        attrs = completed(storage, name)
        if attrs is None:
            cfg = compose_config(common + arm.overrides() + [f"seed={seed}", f"study.name={name}"])
            study = create_study(cfg, storage, make_sampler(cfg.study), optuna.pruners.NopPruner())
            study.optimize(Objective(cfg, plan_study(cfg), workspace), n_trials=1)
            attrs = dict(study.trials[0].user_attrs)
            ran += 1
            elapsed = time.perf_counter() - start
            eta = elapsed / ran * (len(todo) - i)
            print(
                f"[{i}/{len(todo)}] {arm.label} seed {seed}: FT val {attrs['ft_val_acc']:.4f} "
                f"energy {attrs['energy']:.3f} adapt {attrs['adaptation_l2']:.3f} "
                f"(HP {attrs['hp_epochs_run']} ep) | {elapsed:.0f}s, ~{eta:.0f}s left",
                flush=True,
            )
        records.append(
            {
                **attrs,
                "arm": arm.label,
                "family": arm.family,
                "tau_label": arm.tau_label,
                "eps": arm.eps,
                "curve": arm.curve,
                "run_seed": seed,
                "overrides": arm.overrides(),
            }
        )
    return records


# --- statistics ------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def spearman(x: Sequence[float], y: Sequence[float], seed: int = 0) -> tuple[float, float]:
    """Spearman ρ and its one-sided permutation p-value (H1: ρ > 0)."""
    rx, ry = np.asarray(ranks(x), float), np.asarray(ranks(y), float)
    if len(rx) < 3 or rx.std() == 0 or ry.std() == 0:
        return float("nan"), float("nan")
    rho = float(np.corrcoef(rx, ry)[0, 1])
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(ry) for _ in range(PERMUTATIONS)])
    rx_c = (rx - rx.mean()) / rx.std()
    perm_c = (perms - perms.mean(1, keepdims=True)) / perms.std(1, keepdims=True)
    null = (perm_c * rx_c).mean(1)
    return rho, float((1 + np.sum(null >= rho - 1e-12)) / (1 + PERMUTATIONS))


# --- summary ---------------------------------------------------------------------------------


@dataclass
class Row:
    arm: str
    curve: str
    tau: str
    eps: float
    head_depth: int
    layers_copied: int
    n: int
    stats: dict[str, tuple[float, float]]  # attr -> (mean, std)


def summarise(records: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for arm in dict.fromkeys(r["arm"] for r in records):
        rs = [r for r in records if r["arm"] == arm]
        stats = {key: mean_std([r[key] for r in rs]) for key, _, _ in COLUMNS}
        stats["wall_ft_s"] = mean_std([r["wall_ft_s"] for r in rs])
        r0 = rs[0]
        rows.append(
            Row(
                arm,
                r0["curve"],
                r0["tau_label"],
                r0["eps"],
                r0["head_depth"],
                r0["layers_copied"],
                len(rs),
                stats,
            )
        )
    return rows


def curve_rows(rows: list[Row], curve: str) -> list[Row]:
    """The rows of one τ-curve in τ order; the linear curves share the τ = 0 arm."""
    out = [
        r
        for r in rows
        if r.curve == curve
        or (curve.startswith("linear") and r.curve.startswith("linear") and r.tau == "0")
    ]
    order = {t: i for i, t in enumerate(["0", "1", "2", "4", "8", "16", "32", "conv"])}
    return sorted(out, key=lambda r: order[r.tau])


@dataclass
class Claim:
    key: str
    statement: str
    verdict: str  # supported | not supported | inconclusive | not measured
    evidence: str


def _se(row: Row, key: str) -> float:
    return row.stats[key][1] / math.sqrt(row.n) if row.n > 1 else float("nan")


def claim_a(rows: list[Row]) -> Claim:
    statement = "FT accuracy vs τ is non-monotone, best at an intermediate τ"
    parts, verdicts = [], []
    for curve in (f"linear ε={e:g}" for e in EPSILONS):
        cr = curve_rows(rows, curve)
        if len(cr) < 3:
            continue
        means = [r.stats["ft_val_acc"][0] for r in cr]
        best = int(np.argmax(means))
        b, first, last = cr[best], cr[0], cr[-1]
        test_best = cr[int(np.argmax([r.stats["test_acc"][0] for r in cr]))]
        if best in (0, len(cr) - 1):
            verdicts.append((curve, "not supported"))
            parts.append(
                f"{curve}: best FT val acc at τ={b.tau} (an end of the curve), "
                f"{means[best]:.4f}; test acc best at τ={test_best.tau}"
            )
            continue
        margins = [means[best] - r.stats["ft_val_acc"][0] for r in (first, last)]
        noise = [math.hypot(_se(b, "ft_val_acc"), _se(r, "ft_val_acc")) for r in (first, last)]
        # NaN noise (one seed) is never clear.
        clear = all(m > PEAK_SE * n for m, n in zip(margins, noise))
        verdicts.append((curve, "supported" if clear else "inconclusive"))
        parts.append(
            f"{curve}: best FT val acc {means[best]:.4f} at τ={b.tau}, "
            f"+{margins[0]:.4f} over τ=0 and +{margins[1]:.4f} over converged "
            f"(standard errors of the differences {noise[0]:.4f}, {noise[1]:.4f}; "
            f"needs > {PEAK_SE:g} each); "
            f"test acc best at τ={test_best.tau}"
        )
    return Claim("a", statement, _combine(verdicts), "; ".join(parts) or "no linear τ-curve run")


def same_features(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials that copy every stage, so z is the same feature space (partial copy's z is the
    output of one stage fewer, on another scale)."""
    return [r for r in records if r["family"] != "partial_copy"]


def claim_b(records: list[dict[str, Any]]) -> Claim:
    statement = "adaptation ‖z_T − z_0‖ grows with the energy left after HP (Spearman ρ)"
    same = same_features(records)
    if len(same) < 3:
        return Claim("b", statement, "not measured", "fewer than 3 trials")
    rho, p = spearman([r["energy"] for r in same], [r["adaptation_l2"] for r in same])
    linear = [r for r in same if r["family"] == "linear"]
    rho_l, p_l = spearman([r["energy"] for r in linear], [r["adaptation_l2"] for r in linear])
    verdict = "supported" if rho > 0 and p < ALPHA else "not supported"
    return Claim(
        "b",
        statement,
        verdict,
        f"trials that copy every stage (linear and MLP heads, same z): ρ = {rho:.3f}, "
        f"one-sided permutation p = {p:.4f} (n = {len(same)}); linear head only: "
        f"ρ = {rho_l:.3f}, p = {p_l:.4f} (n = {len(linear)})",
    )


def claim_c(rows: list[Row]) -> Claim:
    statement = "label smoothing ε keeps energy higher at long τ"
    by = {(r.curve, r.tau): r for r in rows}
    parts, higher = [], []
    for tau in LONG_TAUS:
        t = "conv" if tau is CONVERGED else str(tau)
        lo, hi = by.get(("linear ε=0", t)), by.get((f"linear ε={EPSILONS[1]:g}", t))
        if lo is None or hi is None:
            continue
        e0, e1 = lo.stats["energy"][0], hi.stats["energy"][0]
        higher.append(e1 > e0)
        parts.append(f"τ={t}: {e1:.3f} (ε={EPSILONS[1]:g}) vs {e0:.3f} (ε=0)")
    if not higher:
        return Claim("c", statement, "not measured", "no long-τ pair of ε arms run")
    verdict = (
        "supported" if all(higher) else ("not supported" if not any(higher) else "inconclusive")
    )
    return Claim("c", statement, verdict, "energy " + "; ".join(parts))


def claim_d(rows: list[Row]) -> Claim:
    statement = "an MLP head / partial copy lower the energy left after HP"
    by = {(r.curve, r.tau): r for r in rows}
    parts, lower = [], []
    for family in ("mlp_head", "partial_copy"):
        for tau in LOWER_ENERGY_TAUS:
            t = "conv" if tau is CONVERGED else str(tau)
            ref, alt = by.get(("linear ε=0", t)), by.get((family, t))
            if ref is None or alt is None:
                continue
            e_ref, e_alt = ref.stats["energy"][0], alt.stats["energy"][0]
            lower.append(e_alt < e_ref)
            parts.append(f"{family} τ={t}: {e_alt:.3f} vs linear {e_ref:.3f}")
    if not lower:
        return Claim("d", statement, "not measured", "no MLP-head or partial-copy arm to compare")
    verdict = "supported" if all(lower) else ("not supported" if not any(lower) else "inconclusive")
    return Claim("d", statement, verdict, "energy " + "; ".join(parts))


def _combine(verdicts: list[tuple[str, str]]) -> str:
    """One verdict when the curves agree, else each curve's."""
    if not verdicts:
        return "not measured"
    if all(v == verdicts[0][1] for _, v in verdicts):
        return verdicts[0][1]
    return ", ".join(f"{v} for {curve}" for curve, v in verdicts)


def bound_check(records: list[dict[str, Any]]) -> str:
    """ĉ = max adaptation/energy, per seed, and whether one seed's ĉ bounds the other seeds."""
    usable = [r for r in same_features(records) if r["energy"] > 0]
    if not usable:
        return "no trials that copy every stage"
    ratio = lambda r: r["adaptation_l2"] / r["energy"]
    c_all = max(ratio(r) for r in usable)
    seeds = sorted({r["run_seed"] for r in usable})
    lines = [
        f"ĉ = max ‖z_T − z_0‖ / energy over the {len(usable)} trials that copy every stage = "
        f"**{c_all:.3f}** (adaptation ≤ ĉ · energy holds for all of them by construction)."
    ]
    if len(seeds) > 1:
        held = []
        for s in seeds:
            c_s = max(ratio(r) for r in usable if r["run_seed"] == s)
            others = [r for r in usable if r["run_seed"] != s]
            ok = sum(r["adaptation_l2"] <= c_s * r["energy"] for r in others)
            held.append(
                f"seed {s}: ĉ = {c_s:.3f}, bounds {ok}/{len(others)} trials of the other seeds"
            )
        lines.append(
            "Held-out check — the bound fitted on one seed, applied to the others: "
            + "; ".join(held)
            + "."
        )
    ratios = sorted(ratio(r) for r in usable)
    lines.append(
        f"adaptation/energy ranges from {ratios[0]:.3f} to {ratios[-1]:.3f} "
        f"(median {ratios[len(ratios) // 2]:.3f})."
    )
    return " ".join(lines)


# --- report ----------------------------------------------------------------------------------


def fmt(stat: tuple[float, float], spec: str, n: int) -> str:
    mean, std = stat
    return spec.format(mean) + (f" ± {spec.format(std)}" if n > 1 else "")


def table(rows: list[Row]) -> str:
    head = ["arm", "τ", "ε", "head", "copied", "n"] + [c[1] for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.arm,
            r.tau,
            f"{r.eps:g}",
            "linear" if r.head_depth == 1 else f"MLP-{r.head_depth}",
            str(r.layers_copied),
            str(r.n),
        ]
        cells += [fmt(r.stats[k], spec, r.n) for k, _, spec in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


REFERENCES = (("linear_tau0", "ft_only"), ("linear_eps0_tauconv", "lp_ft"))  # (arm, schedule)


def interval_table(records: list[dict[str, Any]]) -> str:
    """FT validation and test accuracy per arm, mean ± 95% t interval over seeds (in %), and the
    paired differences (same seed) to the ft_only and lp_ft arms (in points)."""
    by_arm: dict[str, dict[int, dict[str, Any]]] = {}
    for r in records:
        by_arm.setdefault(r["arm"], {})[r["run_seed"]] = r
    refs = [(arm, name) for arm, name in REFERENCES if arm in by_arm]
    head = ["arm", "n", "FT val acc (%)", "test acc (%)"]
    head += [f"{what} − {name}" for _, name in refs for what in ("Δ val", "Δ test")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, runs in by_arm.items():
        seeds = sorted(runs)
        cells = [
            arm,
            str(len(seeds)),
            points(mean_interval([runs[s]["ft_val_acc"] for s in seeds])),
            points(mean_interval([runs[s]["test_acc"] for s in seeds])),
        ]
        for ref, _ in refs:
            paired = [s for s in seeds if s in by_arm[ref]]
            for key in ("ft_val_acc", "test_acc"):
                if ref == arm:
                    cells.append("")
                    continue
                diff = mean_interval([runs[s][key] - by_arm[ref][s][key] for s in paired])
                cells.append(points(diff, signed=True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(
    rows: list[Row], records: list[dict[str, Any]], c_hat: float | None, path: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ticks = ["0", "1", "2", "4", "8", "16", "32", "conv"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    curves = list(dict.fromkeys(r.curve for r in rows if r.tau != "0" or r.curve != "linear ε=0"))
    curves = [f"linear ε={e:g}" for e in EPSILONS] + [
        c for c in curves if not c.startswith("linear")
    ]
    markers = {"mlp_head": "s", "partial_copy": "^"}
    for curve in curves:
        cr = curve_rows(rows, curve)
        if not cr:
            continue
        x = [ticks.index(r.tau) for r in cr]
        for ax, key in ((axes[0], "ft_val_acc"), (axes[1], "energy")):
            ax.errorbar(
                x,
                [r.stats[key][0] for r in cr],
                yerr=[r.stats[key][1] for r in cr],
                marker=markers.get(curve, "o"),
                capsize=3,
                label=curve,
            )
    for ax, ylabel in ((axes[0], "FT validation accuracy"), (axes[1], "energy after HP")):
        ax.set_xticks(range(len(ticks)), ticks)
        ax.set_xlabel("HP epochs τ")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for curve in curves:
        rs = [r for r in same_features(records) if r["curve"] == curve]
        axes[2].scatter(
            [r["energy"] for r in rs],
            [r["adaptation_l2"] for r in rs],
            s=18,
            marker=markers.get(curve, "o"),
            label=curve,
        )
    if c_hat is not None:
        e_max = max(r["energy"] for r in same_features(records))
        axes[2].plot(
            [0, e_max], [0, c_hat * e_max], "k--", lw=1, label=f"ĉ · energy, ĉ={c_hat:.2f}"
        )
    axes[2].set_xlabel("energy after HP (partial copy: z is another layer, not shown)")
    axes[2].set_ylabel("‖z_T − z_0‖ (mean over val)")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(
    args: argparse.Namespace,
    experiment: str,
    base: list[str],
    records: list[dict[str, Any]],
    wall_s: float,
    png: Path,
    md_dir: Path,
) -> str:
    rows = summarise(records)
    claims = [claim_a(rows), claim_b(records), claim_c(rows), claim_d(rows)]
    same = [r for r in same_features(records) if r["energy"] > 0]
    c_hat = max((r["adaptation_l2"] / r["energy"] for r in same), default=None)
    plot(rows, records, c_hat, png, f"{experiment}: FT accuracy, energy and adaptation vs τ")
    ft_s = sum(r["wall_ft_s"] for r in records)
    hp_s = sum(r["wall_hp_s"] for r in records)
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/reproduce.py", *sys.argv[1:]])
    out = [
        f"Command: `{command}`",
        "",
        f"{len(records)} trials ({len(rows)} arms × seeds {', '.join(map(str, args.seeds))}), "
        f"FT epochs {args.ft_epochs}, device {args.device_name}; "
        f"FT {ft_s / 60:.1f} min and HP {hp_s / 60:.1f} min of trial time, "
        f"{wall_s / 60:.1f} min wall for this invocation (arms already in storage are reused). "
        f"Base overrides: `{' '.join(base)}`.",
        "",
        "### Claims",
        "",
    ]
    if args.smoke:
        out[-2:-2] = [
            "Smoke run: a handful of generated images and a random backbone check the "
            "pipeline; its numbers say nothing about the claims.",
            "",
        ]
    for c in claims:
        out.append(f"- **({c.key}) {c.statement}: {c.verdict}.** {c.evidence}.")
    if not any(r["family"] == "partial_copy" for r in records) and not args.only:
        out.append(
            "- partial_copy was not run: the backbone has a single stage, so copying all "
            "but the last would copy nothing."
        )
    out += [
        "",
        "### Energy bound",
        "",
        bound_check(records),
        "",
        "### FT accuracy with 95% intervals",
        "",
        "Mean ± 95% t interval over seeds; Δ: the arm minus ft_only (τ = 0) or lp_ft "
        "(converged, ε = 0) on the same seed, mean ± 95% t interval of those paired "
        "differences, in points (every arm of a seed runs the same trial seed).",
        "",
        interval_table(records),
        "",
        "### Per arm (mean ± std over seeds)",
        "",
        table(rows),
        "",
        f"![τ-curve]({os.path.relpath(png, md_dir)})",
        "",
        "Energy: mean ‖e_y − q_0‖ on the train split at the start of FT (unsmoothed labels); "
        "HP train acc at the end of HP; ‖z_T − z_0‖ and cos: the copied part's pooled "
        "features before and after FT on the validation split. `conv`: HP until the "
        "objective improved < 0.1% over 5 epochs (HP epochs column: how long that took).",
        "",
        "Arm overrides (each arm = `python -m hpsearch <base overrides> <arm overrides> "
        "search_space=none study.n_trials=1 seed=S`):",
        "",
    ]
    for arm in dict.fromkeys(r["arm"] for r in records):
        ov = next(r["overrides"] for r in records if r["arm"] == arm)
        out.append(f"- `{arm}`: `{' '.join(ov)}`")
    return "\n".join(out) + "\n"


def update_section(path: Path, key: str, title: str, body: str) -> None:
    """Replace (or append) the section between this experiment's markers in ``path``."""
    begin, end = f"<!-- reproduce:{key} begin -->", f"<!-- reproduce:{key} end -->"
    section = f"{begin}\n## {title}\n\n{body}{end}\n"
    text = path.read_text() if path.exists() else "# Results\n\n"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-root", help="split-CIFAR ImageFolder root (../shared/data/cifar10)")
    p.add_argument("--weights", help="source ResNet-18 state_dict (resnet18_cifar10_src5.pt)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--toy", action="store_true", help="the synthetic toy experiment instead")
    kind.add_argument(
        "--smoke",
        action="store_true",
        help="generated images, random ResNet-18, tiny sizes: < 1 minute",
    )
    kind.add_argument(
        "--lowdata",
        action="store_true",
        help="split-CIFAR's low-data regime (+experiment=split_cifar_lowdata)",
    )
    p.add_argument(
        "--ft-epochs",
        type=int,
        default=None,
        help="FT epochs per trial (default 6 split-CIFAR, 5 low-data, 8 toy, 1 smoke)",
    )
    p.add_argument(
        "--hp-max-epochs",
        type=int,
        default=None,
        help="cap on HP epochs for the converged arms (default: hp.max_epochs)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--only", help="comma-separated arm labels to run (default: all)")
    p.add_argument("--out", type=Path, help="report directory (default docs/reproduce/<exp>)")
    p.add_argument(
        "--storage",
        help="Optuna storage URL, or 'memory' (default: sqlite under storage/; memory for --smoke)",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an hpsearch override for every trial (repeatable), e.g. ft.lr=0.02",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; 1 for --smoke, which is robust "
        "when other jobs share the cores)",
    )
    p.add_argument(
        "--cache-dir",
        default=str(REPO / "storage" / "cache"),
        help="decoded-data and feature cache",
    )
    p.add_argument(
        "--results-md",
        type=Path,
        help="also write the report as this experiment's section of a markdown file "
        "(e.g. docs/results.md)",
    )
    args = p.parse_args(argv)
    experiment = (
        "smoke"
        if args.smoke
        else "toy"
        if args.toy
        else "split_cifar_lowdata"
        if args.lowdata
        else "split_cifar"
    )
    args.experiment = experiment
    if args.ft_epochs is None:
        args.ft_epochs = {"smoke": 1, "toy": 8, "split_cifar": 6, "split_cifar_lowdata": 5}[
            experiment
        ]
    if args.ft_epochs < 1 or len(set(args.seeds)) != len(args.seeds):
        p.error("--ft-epochs must be >= 1 and --seeds distinct")
    if args.out is None:
        args.out = REPO / "docs" / "reproduce" / experiment
    if args.storage is None:
        args.storage = (
            "memory"
            if args.smoke
            else f"sqlite:///{REPO / 'storage' / f'reproduce-{experiment}.db'}"
        )
    if args.smoke:
        args.cache_dir = str(Path(args.out).resolve() / "cache")
        args.threads = args.threads or 1
    return args


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"`{device}` ({torch.cuda.get_device_name(device)})"
    return f"`cpu` ({os.cpu_count()} cores, torch threads: {torch.get_num_threads()})"


TITLES = {
    "split_cifar": "Reproduction on split-CIFAR (ResNet-18, 5 source → 5 target classes)",
    "split_cifar_lowdata": "Reproduction on split-CIFAR's low-data regime (100 training "
    "images per class)",
    "toy": "Reproduction on the toy experiment (linear backbone, synthetic data)",
    "smoke": "Smoke run (generated images, random ResNet-18)",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        from hpsearch.trial.workspace import resolve_device

        args.device_name = _device_name(resolve_device(args.device))
        if args.smoke:
            base = smoke_overrides(out)
        elif args.toy:
            base = ["+experiment=toy"]
        else:
            base = split_cifar_overrides(args)
        base += args.override
        records = run_sweep(args, base, args.experiment)
    except HpsearchError as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2
    (out / "results.json").write_text(json.dumps(records, indent=1, default=str))
    png = out / "tau_curve.png"
    md_dir = args.results_md.parent if args.results_md else out
    body = report(
        args, args.experiment, base, records, time.perf_counter() - start, png, md_dir.resolve()
    )
    (out / "report.md").write_text(
        f"## {TITLES[args.experiment]}\n\n"
        + body.replace(os.path.relpath(png, md_dir.resolve()), png.name)
    )
    if args.results_md:
        update_section(args.results_md, args.experiment, TITLES[args.experiment], body)
    print(f"wrote {out / 'report.md'}, {png}" + (f", {args.results_md}" if args.results_md else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
