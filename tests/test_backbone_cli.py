"""Backbone families through the command line: a bad backbone is one line and exit 2 before any
study is touched; a study whose space holds ``backbone.name`` runs each choice and reports
accuracy per backbone. Tiny offline models only (timm test models, a two-layer HF ViT)."""

from __future__ import annotations

import optuna
import pytest
import torch
from conftest import REPO, run_cli
from imagedata import make_imagefolder

pytest.importorskip("timm")
pytest.importorskip("transformers")

TINY = [
    "data=imagefolder",
    "data.root={work}/images",
    "data.train_per_class=4",
    "data.val_per_class=2",
    "hp.epochs=1",
    "ft.epochs=1",
    "progress=false",
    "study.n_trials=1",
    "search_space=none",
]
TIMM = ["backbone=timm", "backbone.name=test_resnet", "backbone.weights=none"]
# A searched key given on the command line is pinned and leaves the space: a search over the
# backbone names none on the command line (the family's default stands for the checks).
TIMM_SEARCHED = ["backbone=timm", "backbone.weights=none"]
OFFLINE = {"HF_HUB_OFFLINE": "1"}  # nothing is ever fetched


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from transformers import ViTConfig, ViTModel

    work = tmp_path_factory.mktemp("backbone_cli")
    make_imagefolder(work / "images", ["cat", "dog"], train_per_class=6, test_per_class=2)
    config = ViTConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(work / "vit")
    (work / "not_a_model").mkdir()
    torch.save({"conv.weight": torch.zeros(2, 2)}, work / "other.pt")
    return work


def studies(work) -> list[str]:
    db = work / "storage" / "hpsearch.db"
    if not db.exists():
        return []
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    return [s.study_name for s in optuna.get_all_study_summaries(storage)]


SPACE = (  # new keys in the space: search_space=none (in TINY), then ++search_space=
    "++search_space={backbone.name: {type: categorical, choices: [test_resnet, vit]},"
    " backbone.layers_copied: {type: int, low: 2, high: 4}}"
)
CHOICES = (
    "+backbone.choices={test_resnet: {_target_: hpsearch.backbones.timm_backbone},"
    " vit: {_target_: hpsearch.backbones.hf_backbone, name: '{work}/vit', weights: hub}}"
)

CASES = {
    "unknown timm name": (
        [*TIMM, "backbone.name=test_resnett"],
        "backbone.name='test_resnett' is not a timm model; closest: test_resnet",
    ),
    "layers_copied beyond the stages": (
        [*TIMM, "backbone.layers_copied=6"],
        "backbone.layers_copied=6 is invalid: must be in [0, 5] for timm:test_resnet",
    ),
    "checkpoint of another architecture": (
        [*TIMM, "backbone.weights={work}/other.pt"],
        "does not fit timm test_resnet: missing keys [",
    ),
    "directory that is not an HF model": (
        ["backbone=hf", "backbone.name={work}/not_a_model", "backbone.weights=hub"],
        "is not a Hugging Face model directory (no config.json",
    ),
    "custom module breaking the protocol": (
        ["backbone=custom", "backbone._target_=custom_backbone.make_without_stages"],
        "breaks the backbone protocol: no `stages`",
    ),
    "a searched backbone with too few stages": (
        [*TIMM_SEARCHED, SPACE, CHOICES],
        "backbone.layers_copied=5 is invalid: must be in [0, 3] for hf:",  # a choice's stages
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_backbone_exits_2_in_one_line_before_any_study(work, case):
    args, message = CASES[case]
    args = [a.replace("{work}", str(work)) for a in [*TINY, *args]]
    env = {**OFFLINE, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}  # custom_backbone importable
    result = run_cli(args + [f"study.name=bad_{case.replace(' ', '_')}"], cwd=work, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("hpsearch: error")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not any(name.startswith("bad_") for name in studies(work))


@pytest.mark.slow  # four trials and a report in subprocesses: minutes on a shared CPU
def test_backbone_searched_as_a_categorical_reports_accuracy_per_backbone(work):
    choices = (
        "+backbone.choices={test_resnet: {_target_: hpsearch.backbones.timm_backbone},"
        f" vit: {{_target_: hpsearch.backbones.hf_backbone, name: '{work}/vit', weights: hub}}}}"
    )
    space = "++search_space={backbone.name: {type: categorical, choices: [test_resnet, vit]}}"
    args = [a.replace("{work}", str(work)) for a in TINY]
    args += [*TIMM_SEARCHED, "backbone.layers_copied=2", space, choices, "study.n_trials=4"]
    args += ["study.name=by_backbone", "study.sampler=random"]
    result = run_cli(args, cwd=work, env=OFFLINE)
    assert result.returncode == 0, result.stderr[-3000:]
    storage = f"sqlite:///{work}/storage/hpsearch.db"
    trials = optuna.load_study(study_name="by_backbone", storage=storage).trials
    picked = {t.params["backbone.name"] for t in trials if t.state.name == "COMPLETE"}
    assert picked == {"test_resnet", "vit"}, picked
    report = run_cli(
        ["mode=report", "study.name=by_backbone", "progress=false"], cwd=work, env=OFFLINE
    )
    assert report.returncode == 0, report.stderr[-2000:]
    summary = (work / "storage" / "reports" / "by_backbone" / "summary.md").read_text()
    section = summary.split("## Per backbone")[1].split("\n## ")[0]
    assert "| test_resnet |" in section and "| vit |" in section, section
    caches = list((work / "storage" / "cache" / "features").glob("*.pt"))
    assert len(caches) >= 2  # each backbone its own feature cache
