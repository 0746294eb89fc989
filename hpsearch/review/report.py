"""``mode=report``: a study's summary, trial table and plots, written to a folder.

``write_report`` reads the study named ``study.name`` from ``storage.url`` (a running study is
fine: it reads what is stored now) and writes ``<storage.reports>/<study.name>/``:

- ``summary.md``: trial counts, the answer of the confirmation (``mode=confirm``) when there is
  one, the best trials, the bound's ĉ and the energy–adaptation Spearman ρ, compute spent per
  phase, pruned and failed trials, parameter importances;
- ``trials.csv``: one row per trial, every parameter and user attr;
- ``confirm.csv`` (when the study has confirmation trials): per confirmed configuration and
  baseline, FT validation and test accuracy with 95% t intervals, and per configuration and
  baseline the paired differences;
- ``config.yaml``: the composed config the study was created with (its user attr ``config``);
- ``<plot>.png`` and ``<plot>.html`` for the figures of ``hpsearch.review.plots`` (the HTML pages
  share one ``plotly.min.js`` in the folder, so they open offline).

The answer is also stored as the study user attrs ``answer`` and ``answer_arms``
(``hpsearch.study.answer``), so the dashboard shows it. summary.md, trials.csv, confirm.csv,
config.yaml and the PNGs are also put into the artifact store
(``storage.artifacts``) as the study's artifacts, so the dashboard shows them; a later report
replaces them instead of adding copies.
"""

from __future__ import annotations

import csv
import json
import logging
import mimetypes
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from hpsearch.record import FAIL_REASON, TrialRecord, schedule_text
from hpsearch.review import plots
from hpsearch.secrets import redact, redact_tree
from hpsearch.stats import Interval, bound_stats
from hpsearch.study.answer import Answer, points, record_answer
from hpsearch.study.progress import prune_reason
from hpsearch.study.storage import load_existing_study, safe_url
from hpsearch.tables import fmt, markdown_table
from hpsearch.trial.records import METRICS, is_confirmation

log = logging.getLogger("hpsearch")

SUMMARY = "summary.md"
TRIALS_CSV = "trials.csv"
CONFIRM_CSV = "confirm.csv"
CONFIG = "config.yaml"  # the study's user attr ``config``: the composed config of the search
MIN_TRIALS_FOR_IMPORTANCE = 2

# Schedule and metric columns of the best-trials table: (user attr, header, format).
BEST_COLUMNS = (
    ("tau", "τ", "d"),
    ("label_smoothing", "ε", ".2f"),
    ("head_depth", "head depth", "d"),
    ("layers_copied", "copied", "d"),
    ("hp_lr", "HP lr", ".3g"),
    ("ft_lr", "FT lr", ".3g"),
    ("energy", "energy", ".4f"),
    ("hp_train_acc", "HP train acc", ".4f"),
    ("hp_val_acc", "HP val acc", ".4f"),
    ("test_acc", "FT test acc", ".4f"),
    ("adaptation_l2", "‖z_T − z_0‖", ".4f"),
)


# ---------------------------------------------------------------------------- reading


def importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """optuna's parameter importances over the complete trials, or (None, why not)."""
    n = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (f"needs at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials ({n} so far)")
    try:
        return dict(optuna.importance.get_param_importances(study)), ""
    except Exception as err:  # an evaluator's limit must not cost the rest of the report
        return None, f"not computable yet: {str(err).splitlines()[0][:160]}"


# ---------------------------------------------------------------------------- trials.csv


def fail_reason(t: FrozenTrial) -> str | None:
    """The reason recorded for a failed trial (user or system attr ``fail_reason``), if any."""
    reason = TrialRecord.of(t).fail_reason or t.system_attrs.get(FAIL_REASON)
    return redact(str(reason)) if reason else None


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return redact(value) if isinstance(value, str) else value


def trial_columns(trials: Sequence[FrozenTrial]) -> tuple[list[str], list[str]]:
    """(parameter names, user attr names) in a stable order: METRICS order, then the rest."""

    params: list[str] = []
    attrs: set[str] = set()
    for t in trials:
        params.extend(p for p in t.params if p not in params)
        attrs.update(t.user_attrs)
    ordered = [k for k in METRICS if k in attrs] + sorted(attrs - set(METRICS))
    return params, ordered


def write_trials_csv(trials: Sequence[FrozenTrial], path: Path) -> list[str]:
    """One row per trial: number, state, objective, ``params_<name>``, every user attr, the FT
    validation accuracy per epoch as reported, timing and a failed trial's reason."""
    params, attrs = trial_columns(trials)
    header = (
        ["number", "state", "ft_val_acc_objective"]
        + [f"params_{p}" for p in params]
        + attrs
        + [
            "intermediate_ft_val_acc",
            "datetime_start",
            "datetime_complete",
            "duration_s",
            "fail_reason",
        ]
    )
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for t in sorted(trials, key=lambda t: t.number):
            duration = t.duration.total_seconds() if t.duration is not None else None
            writer.writerow(
                [t.number, t.state.name, _cell(t.value)]
                + [_cell(t.params.get(p)) for p in params]
                + [_cell(t.user_attrs.get(a)) for a in attrs]
                + [
                    _cell(
                        {str(k): v for k, v in sorted(t.intermediate_values.items())}
                        if t.intermediate_values
                        else None
                    ),
                    _cell(t.datetime_start),
                    _cell(t.datetime_complete),
                    _cell(duration),
                    _cell(fail_reason(t)),
                ]
            )
    return header


# ---------------------------------------------------------------------------- confirm.csv

CONFIRM_HEADER = [
    "kind",
    "arm",
    "versus",
    "schedule",
    "n_seeds",
    "seeds",
    "trials",
    "search_val_acc",
    "val_mean",
    "val_low",
    "val_high",
    "test_mean",
    "test_low",
    "test_high",
    "pending",
    "lost",
]


def _bounds(iv: Interval | None) -> list[Any]:
    if iv is None:
        return ["", "", ""]
    return [iv.mean, _cell(iv.low), _cell(iv.high)]


def write_confirm_csv(answer: Answer, path: Path) -> None:
    """One ``arm`` row per confirmed configuration and baseline (FT validation and test accuracy,
    mean and 95% t interval over its seeds), then one ``difference`` row per configuration and
    baseline: configuration − baseline, paired over the seeds both completed."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CONFIRM_HEADER)
        for a in answer.arms:
            seeds = sorted(a.runs)
            writer.writerow(
                [
                    "arm",
                    a.name,
                    "",
                    a.schedule,
                    len(seeds),
                    json.dumps(seeds),
                    json.dumps([a.runs[s].number for s in seeds]),
                    _cell(a.search_value),
                    *_bounds(a.val),
                    *_bounds(a.test),
                    a.pending,
                    a.lost,
                ]
            )
        for d in answer.differences:
            writer.writerow(
                [
                    "difference",
                    d.arm.name,
                    d.baseline.name,
                    d.arm.schedule,
                    len(d.seeds),
                    json.dumps(d.seeds),
                    json.dumps(
                        [[d.arm.runs[s].number, d.baseline.runs[s].number] for s in d.seeds]
                    ),
                    "",
                    *_bounds(d.val),
                    *_bounds(d.test),
                    "",
                    "",
                ]
            )


def answer_markdown(answer: Answer | None) -> list[str]:
    """The summary's section on the confirmation: the recommendation, each arm, the paired
    differences."""
    out = ["## The answer: confirmed configurations against the baselines", ""]
    if answer is None:
        return out + [
            "Not confirmed yet: `mode=confirm` (with the search's overrides) re-runs the "
            "best configurations and the baselines on shared seeds and answers which "
            "schedule to use.",
            "",
        ]
    out += [
        f"**{answer.recommendation[0].upper()}{answer.recommendation[1:]}.**",
        "",
        "FT accuracy in %, mean ± 95% t interval over the seeds every arm ran (the same "
        "seeds for all; the search trial's own run is not one of them: it was chosen for "
        "scoring highest, so its value is biased upward). See "
        f"[`{CONFIRM_CSV}`]({CONFIRM_CSV}).",
        "",
    ]
    out += markdown_table(
        ["arm", "schedule", "seeds", "search val", "val", "test", "pending"],
        [
            [
                a.name,
                a.schedule,
                str(len(a.runs)),
                "–" if a.search_value is None else f"{100 * a.search_value:.1f}",
                points(a.val),
                points(a.test),
                str(a.pending),
            ]
            for a in answer.arms
        ],
    )
    out.append("")
    if answer.differences:
        out += ["Paired differences, configuration − baseline, in points (same seeds):", ""]
        out += markdown_table(
            ["configuration", "baseline", "pairs", "Δ val", "Δ test", "beats it beyond the noise"],
            [
                [
                    d.arm.name,
                    d.baseline.name,
                    str(len(d.seeds)),
                    points(d.val, signed=True),
                    points(d.test, signed=True),
                    "yes" if d.beats() else "no",
                ]
                for d in answer.differences
            ],
        )
        out.append("")
    return out


# ---------------------------------------------------------------------------- summary.md


def _sum_attr(trials: Sequence[FrozenTrial], key: str) -> float:
    values = (TrialRecord.of(t).finite(key) for t in trials)
    return sum(v for v in values if v is not None)


BACKBONE_PARAM = "backbone.name"  # a searched categorical: which backbone a trial finetuned


def backbone_markdown(trials: Sequence[FrozenTrial]) -> list[str]:
    """Accuracy per backbone when the study searched ``backbone.name`` (else nothing): complete
    search trials per choice, best and mean FT validation accuracy, mean test accuracy and
    energy."""
    done = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.value is not None
        and BACKBONE_PARAM in t.params
        and not is_confirmation(t)
    ]
    if not done:
        return []
    names = sorted({str(t.params[BACKBONE_PARAM]) for t in done})
    rows = []
    for name in names:
        group = [t for t in done if str(t.params[BACKBONE_PARAM]) == name]
        values = [float(t.value) for t in group]
        mean = lambda key, group=group: _mean([TrialRecord.of(t).finite(key) for t in group])
        rows.append(
            [
                name,
                str(len(group)),
                f"{max(values):.4f}",
                f"{sum(values) / len(values):.4f}",
                fmt(mean("test_acc"), ".4f"),
                fmt(mean("energy"), ".3f"),
            ]
        )
    rows.sort(key=lambda r: -float(r[2]))
    header = ["backbone", "trials", "best FT val acc", "mean FT val acc", "mean test acc"]
    return ["## Per backbone", "", *markdown_table([*header, "mean energy"], rows), ""]


def _mean(values: list[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None]
    return sum(numbers) / len(numbers) if numbers else None


def summary_markdown(
    study: optuna.Study,
    trials: Sequence[FrozenTrial],
    top_k: int,
    url: str,
    figures: Sequence[plots.Figure],
    imp: dict[str, float] | None,
    imp_note: str,
    answer: Answer | None = None,
) -> str:
    """summary.md: the study's counts, the confirmation's answer, the best trials, the bound,
    the compute spent, the stopped trials, the importances and the files, one section each."""
    return "\n".join(
        _heading_section(study, trials, url)
        + answer_markdown(answer)
        + _best_section(trials, top_k)
        + backbone_markdown(trials)
        + _bound_section(trials)
        + _compute_section(trials)
        + _stopped_section(trials)
        + _importance_section(imp, imp_note)
        + _files_section(study, figures, answer)
    )


def _heading_section(study: optuna.Study, trials: Sequence[FrozenTrial], url: str) -> list[str]:
    counts = {s: sum(1 for t in trials if t.state == s) for s in TrialState}
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    out = [
        f"# Study `{study.study_name}`",
        "",
        f"Storage `{safe_url(url)}`, report written {now}. Objective: FT validation accuracy "
        "(maximised).",
        "",
    ]
    if counts[TrialState.RUNNING] or counts[TrialState.WAITING]:
        out += ["The study is still running: this report shows the trials stored so far.", ""]
    out += ["## Trials", ""]
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    out += markdown_table(
        ["complete", "pruned", "failed", "running", "waiting", "total"],
        [
            [str(counts[s]) for s in (*states, TrialState.RUNNING, TrialState.WAITING)]
            + [str(len(trials))]
        ],
    )
    return out + [""]


def _best_section(trials: Sequence[FrozenTrial], top_k: int) -> list[str]:
    done = sorted(
        (
            t
            for t in trials
            if t.state == TrialState.COMPLETE and t.value is not None and not is_confirmation(t)
        ),
        key=lambda t: (-float(t.value), t.number),
    )
    out = ["## Best trials", ""]
    if any(is_confirmation(t) for t in trials):
        out += ["Search trials only (the confirmation's repeats are in the answer above).", ""]
    if not done:
        return out + ["No complete trial yet.", ""]
    best = TrialRecord.of(done[0])
    out += [
        f"**Best trial: {done[0].number}** — FT validation accuracy {done[0].value:.4f}, "
        f"test accuracy {fmt(best.test_acc, '.4f')} ({schedule_text(best)}).",
        "",
    ]
    header = ["trial", "FT val acc"] + [h for _, h, _ in BEST_COLUMNS]
    rows = [
        [str(t.number), f"{t.value:.4f}"]
        + [fmt(getattr(TrialRecord.of(t), k), f) for k, _, f in BEST_COLUMNS]
        for t in done[:top_k]
    ]
    return out + markdown_table(header, rows) + [""]


def _bound_section(trials: Sequence[FrozenTrial]) -> list[str]:
    bound = bound_stats(trials)
    out = ["## Energy bounds feature adaptation", ""]
    if bound["c_hat"] is not None:
        out.append(
            f"- ĉ = max ‖z_T − z_0‖ / energy = **{bound['c_hat']:.4g}** (trial "
            f"{bound['c_hat_trial']}, over {bound['n_ratio']} complete trials): every "
            "trial so far has ‖z_T − z_0‖ ≤ ĉ · energy."
        )
    else:
        out.append("- ĉ: no complete trial with energy > 0 and adaptation yet.")
    if bound["spearman_rho"] is not None:
        out.append(
            f"- Spearman ρ(energy, ‖z_T − z_0‖) = **{bound['spearman_rho']:.3f}** over "
            f"{bound['n_rho']} complete trials."
        )
    else:
        out.append(
            f"- Spearman ρ: needs 2 complete trials with varying energy and adaptation "
            f"({bound['n_rho']} so far)."
        )
    return out + [""]


def _compute_section(trials: Sequence[FrozenTrial]) -> list[str]:
    wall = {k: _sum_attr(trials, k) for k in ("wall_features_s", "wall_hp_s", "wall_ft_s")}
    total = sum(t.duration.total_seconds() for t in trials if t.duration is not None)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    records = [TrialRecord.of(t) for t in trials]
    hp_epochs = sum(
        int(r.hp_epochs_run if r.hp_epochs_run is not None else r.tau or 0) for r in records
    )
    rows = [
        ["HP epochs", str(hp_epochs)],
        ["FT epochs", str(int(_sum_attr(trials, "ft_epochs_run")))],
        ["copied-part outputs (s)", f"{wall['wall_features_s']:.1f}"],
        ["head probing (s)", f"{wall['wall_hp_s']:.1f}"],
        ["finetuning of complete trials (s)", f"{wall['wall_ft_s']:.1f}"],
        [
            "rest: pruned trials' FT, evaluation, setup (s)",
            f"{max(0.0, total - sum(wall.values())):.1f}",
        ],
        ["all finished trials (s)", f"{total:.1f}"],
        ["first start to last finish (s)", fmt(span, ".1f")],
    ]
    return ["## Compute spent", ""] + markdown_table(["", "total"], rows) + [""]


def _stopped_section(trials: Sequence[FrozenTrial]) -> list[str]:
    stopped = [t for t in trials if t.state in (TrialState.PRUNED, TrialState.FAIL)]
    if not stopped:
        return []
    rows = [
        [
            str(t.number),
            t.state.name.lower(),
            prune_reason(t)
            if t.state == TrialState.PRUNED
            else (fail_reason(t) or "no reason recorded").splitlines()[0][:200],
        ]
        for t in sorted(stopped, key=lambda t: t.number)
    ]
    return (
        ["## Pruned and failed trials", ""]
        + markdown_table(["trial", "state", "reason"], rows)
        + [""]
    )


def _importance_section(imp: dict[str, float] | None, imp_note: str) -> list[str]:
    out = ["## Parameter importances", ""]
    if imp:
        out += markdown_table(
            ["parameter", "importance"],
            [[p, f"{v:.3f}"] for p, v in sorted(imp.items(), key=lambda kv: -kv[1])],
        )
    else:
        out.append(f"Not computed: {imp_note}.")
    return out + [""]


def _files_section(
    study: optuna.Study, figures: Sequence[plots.Figure], answer: Answer | None
) -> list[str]:
    out = [
        "## Files",
        "",
        f"- [`{TRIALS_CSV}`]({TRIALS_CSV}): one row per trial, every parameter and metric.",
    ]
    if answer is not None:
        out.append(
            f"- [`{CONFIRM_CSV}`]({CONFIRM_CSV}): the confirmation, per arm and per "
            "paired difference."
        )
    if "config" in study.user_attrs:
        out.append(f"- [`{CONFIG}`]({CONFIG}): the composed config the study was created with.")
    for fig in figures:
        out.append(
            f"- {fig.title}: [`{fig.stem}.png`]({fig.stem}.png), interactive "
            f"[`{fig.stem}.html`]({fig.stem}.html)"
        )
    return out + ["", *(f"![{fig.title}]({fig.stem}.png)" for fig in figures), ""]


# ---------------------------------------------------------------------------- artifacts


def publish_artifacts(
    study: optuna.Study, url: str, artifacts_dir: str, files: Sequence[Path]
) -> int:
    """Put ``files`` into the artifact store as the study's artifacts.

    Each file gets an id derived from the storage, study and file name, so a new report
    overwrites the previous one's artifacts instead of piling up copies. The metadata is the
    study system attr optuna.artifacts.upload_artifact writes, so optuna and the dashboard
    list them.
    """
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

    from hpsearch.review.dashboard import open_artifact_store

    store = open_artifact_store(artifacts_dir)
    storage = study._storage
    for path in files:
        artifact_id = str(
            uuid.uuid5(
                uuid.NAMESPACE_URL, f"hpsearch-report/{safe_url(url)}/{study._study_id}/{path.name}"
            )
        )
        with open(path, "rb") as fh:
            store.write(artifact_id, fh)
        mimetype, encoding = mimetypes.guess_type(path.name)
        meta = {
            "artifact_id": artifact_id,
            "filename": f"report-{path.name}",
            "mimetype": mimetype or "application/octet-stream",
            "encoding": encoding,
        }
        storage.set_study_system_attr(
            study._study_id, ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(meta)
        )
    return len(files)


# ---------------------------------------------------------------------------- the mode


def build_figures(
    trials: Sequence[FrozenTrial], imp: dict[str, float] | None, imp_note: str
) -> list[plots.Figure]:
    bound = bound_stats(trials)
    return [
        plots.ft_acc_vs_tau(trials),
        plots.energy_vs_adaptation(trials, bound["c_hat"], bound["spearman_rho"]),
        plots.energy_vs_ft_acc(trials),
        plots.optimization_history(trials),
        plots.param_importances(imp, imp_note),
    ]


def write_report(cfg: DictConfig) -> Path:
    """Write the report of study ``study.name`` and return its folder."""
    url, name = str(cfg.storage.url), str(cfg.study.name)
    study = load_existing_study(url, name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = study.get_trials(deepcopy=False)
    out = Path(str(cfg.storage.reports)) / name
    out.mkdir(parents=True, exist_ok=True)

    write_trials_csv(trials, out / TRIALS_CSV)
    imp, imp_note = importances(study)
    figures = build_figures(trials, imp, imp_note)
    for fig in figures:
        plots.write_png(fig, out / f"{fig.stem}.png")
        plots.write_html(fig, out / f"{fig.stem}.html")
    answer = record_answer(study)  # also the study's user attrs, for the dashboard
    (out / SUMMARY).write_text(
        summary_markdown(study, trials, int(cfg.study.top_k), url, figures, imp, imp_note, answer),
        encoding="utf-8",
    )
    published = [out / SUMMARY, out / TRIALS_CSV] + [out / f"{f.stem}.png" for f in figures]
    if answer is not None:
        write_confirm_csv(answer, out / CONFIRM_CSV)
        published.append(out / CONFIRM_CSV)
    if "config" in study.user_attrs:  # the dashboard cuts attrs at 1024 characters; this is whole
        (out / CONFIG).write_text(
            OmegaConf.to_yaml(OmegaConf.create(redact_tree(study.user_attrs["config"]))),
            encoding="utf-8",
        )
        published.append(out / CONFIG)
    n = publish_artifacts(study, url, str(cfg.storage.artifacts), published)
    log.info(
        "report of study %r (%d trials) written to %s; %d files are the study's artifacts in %s",
        name,
        len(trials),
        out,
        n,
        cfg.storage.artifacts,
    )
    return out
