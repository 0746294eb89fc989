"""Backbone families (hpsearch.backbones): tiny timm test models and a two-layer Hugging Face ViT
built offline, a user's own module, their stages, features, input specs and bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from hpsearch.backbones import (
    HF,
    TIMM,
    TORCHVISION,
    StagedBackbone,
    load_backbone,
    new_transfer_net,
    stage_count,
)
from hpsearch.config import BackboneConfig, DataConfig, HeadConfig
from hpsearch.data import InputPipeline
from hpsearch.errors import HpsearchError
from hpsearch.space import apply_params

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

DATA = OmegaConf.structured(DataConfig)
HEAD = OmegaConf.structured(HeadConfig)


def backbone(**values) -> OmegaConf:
    return OmegaConf.merge(OmegaConf.structured(BackboneConfig), values)


def load(bb, seed: int = 0):
    return load_backbone(bb, DATA, 3, seed)


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A two-layer ViT saved with save_pretrained, with an image processor config."""
    from transformers import ViTConfig, ViTModel

    path = tmp_path_factory.mktemp("vit")
    config = ViTConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    processor = {"size": {"height": 24, "width": 24}, "resample": 3}
    processor |= {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    (path / "preprocessor_config.json").write_text(json.dumps(processor))
    return path


TIMM_STAGES = {
    "test_resnet": ["stem", "layer1", "layer2", "layer3", "layer4"],
    "test_convnext": ["stem", "stage1", "stage2", "stage3", "stage4"],
    "test_efficientnet": ["stem", "blocks0", "blocks1", "blocks2", "blocks3", "blocks4"],
    "test_vit": ["embed", "blocks0-1", "blocks2-3", "blocks4-4", "blocks5-5"],
}


@pytest.mark.parametrize("name", list(TIMM_STAGES))
def test_timm_stages_copy_k_and_reinitialise_the_rest(name):
    size = 32
    bb = backbone(_target_=TIMM, name=name, weights="none", layers_copied=2)
    pre = load(bb)
    staged = pre.model
    assert staged.stage_names == TIMM_STAGES[name]
    assert stage_count(bb) == len(TIMM_STAGES[name])
    assert staged.conv == (name != "test_vit")
    net = new_transfer_net(pre, bb, HEAD, 3, 5, seed=7)
    for copied, original in zip(net.copied, staged.stages[:2]):
        assert all(
            torch.equal(a, b)
            for a, b in zip(copied.state_dict().values(), original.state_dict().values())
        )
    upper_own = [t for t in net.upper.state_dict().values() if t.is_floating_point()]
    upper_pre = [
        t for s in staged.stages[2:] for t in s.state_dict().values() if t.is_floating_point()
    ]
    assert any(not torch.equal(a, b) for a, b in zip(upper_own, upper_pre))  # re-initialised
    again = new_transfer_net(pre, bb, HEAD, 3, 5, seed=7)
    assert all(
        torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values())
    )
    x = torch.randn(2, 3, size, size)
    assert net(x).shape == (2, 5)
    assert net.features(x).shape == (2, staged.widths[2])


def test_timm_vit_features_are_the_cls_token_timm_pools():
    bb = backbone(_target_=TIMM, name="test_vit", weights="none", layers_copied=5)
    staged = load(bb, seed=3).model
    with torch.random.fork_rng():
        torch.manual_seed(3)
        reference = timm.create_model("test_vit", pretrained=False, num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = staged.pool(staged(x))
        theirs = reference.forward_head(reference.forward_features(x), pre_logits=True)
    torch.testing.assert_close(ours, theirs)


def test_hf_vit_z_is_the_cls_token_and_the_spec_is_the_processors(tiny_vit):
    from transformers import AutoModel

    bb = backbone(_target_=HF, name=str(tiny_vit), weights="hub", layers_copied=3)
    staged = load(bb).model
    assert staged.stage_names == ["embed", "layers0-0", "layers1-1"]
    assert (staged.spec.size, staged.spec.mean, staged.spec.interpolation) == (
        24,
        (0.5, 0.5, 0.5),
        "bicubic",
    )
    reference = AutoModel.from_pretrained(str(tiny_vit)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = reference(pixel_values=x).last_hidden_state[:, 0]
        torch.testing.assert_close(staged.pool(staged(x)), want)  # never the random pooler
    overridden = load(backbone(_target_=HF, name=str(tiny_vit), weights="hub", input_size=16))
    assert overridden.model.spec.size == 16 and overridden.model.spec.mean == (0.5, 0.5, 0.5)
    random_init = load(backbone(_target_=HF, name=str(tiny_vit), weights="none"))
    assert random_init.model.spec.size == DATA.image_size  # no pretrained preprocessing


def test_timm_directory_weights_bring_their_input_spec(tmp_path):
    from timm.models import save_for_hf

    torch.manual_seed(1)
    model = timm.create_model("test_resnet", num_classes=5)
    save_for_hf(model, str(tmp_path), data_config={"input_size": (3, 40, 40), "mean": (0.1,) * 3})
    bb = backbone(_target_=TIMM, name="test_resnet", weights=str(tmp_path))
    staged = load(bb).model
    assert staged.spec.size == 40 and staged.spec.mean == (0.1, 0.1, 0.1)
    torch.testing.assert_close(staged.stages[1][0].conv1.weight, model.layer1[0].conv1.weight)


def test_pipeline_follows_the_backbone_spec(tiny_vit):
    staged = load(backbone(_target_=HF, name=str(tiny_vit), weights="hub")).model
    pipe = InputPipeline(DATA, "image", torch.device("cpu"), spec=staged.spec)
    x = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    out = pipe(x)
    assert out.shape == (1, 3, 24, 24)
    torch.testing.assert_close(out, torch.ones_like(out))  # (1 - 0.5) / 0.5


def test_state_dict_file_loads_and_a_mismatch_names_the_keys(tmp_path):
    torch.manual_seed(2)
    source = timm.create_model("test_resnet", num_classes=5)
    torch.save(source.state_dict(), tmp_path / "ok.pt")
    staged = load(backbone(_target_=TIMM, name="test_resnet", weights=str(tmp_path / "ok.pt")))
    torch.testing.assert_close(
        staged.model.stages[4][0].conv1.weight, source.layer4[0].conv1.weight
    )
    other = timm.create_model("test_convnext", num_classes=5)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(HpsearchError, match=r"does not fit timm test_resnet: missing keys \[.*"):
        load(backbone(_target_=TIMM, name="test_resnet", weights=str(tmp_path / "other.pt")))


def test_custom_module_follows_the_protocol():
    bb = backbone(_target_="custom_backbone.make_two_conv", kwargs={"width": 3}, weights="none")
    pre = load(bb)
    staged = pre.model
    assert isinstance(staged, StagedBackbone) and staged.conv
    assert staged.spec.size == 16 and staged.spec.std == (0.25, 0.25, 0.25)
    assert staged.widths == [3, 3, 6]
    net = new_transfer_net(pre, bb, HEAD, 3, 4, seed=0)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(net.features(x), net.copied(x).amax(dim=(2, 3)))


def test_backbone_name_choices_set_the_whole_backbone(tiny_vit):
    cfg = OmegaConf.create({"backbone": backbone(_target_=TORCHVISION, name="resnet18")})
    cfg.backbone.choices = {
        "test_resnet": {"_target_": TIMM, "weights": "none"},
        "vit": {"_target_": HF, "weights": "hub", "kwargs": {}},
    }
    picked = apply_params(cfg, {"backbone.name": "test_resnet"})
    assert (picked.backbone._target_, picked.backbone.weights) == (TIMM, "none")
    assert cfg.backbone._target_ == TORCHVISION  # the study's config is left alone


BAD = {
    "unknown timm name, closest named": (
        dict(_target_=TIMM, name="resnet10x", weights="none"),
        r"backbone.name='resnet10x' is not a timm model; closest: .*resnet10t",
    ),
    "layers_copied beyond the stages": (
        dict(_target_=TIMM, name="test_resnet", weights="none", layers_copied=6),
        r"backbone.layers_copied=6 is invalid: must be in \[0, 5\] for timm:test_resnet "
        r"\(stages: stem, layer1",
    ),
    "input size the model cannot take": (
        dict(_target_=TIMM, name="test_vit", weights="none", input_size=30),
        r"backbone timm:test_vit cannot take 30x30 inputs .*should be divisible by patch size "
        r"\(16\).* set backbone.input_size=N",
    ),
    "directory that is not an HF model": (
        dict(_target_=HF, name="{tmp}", weights="hub"),
        r"is not a Hugging Face model directory \(no config.json",
    ),
    "custom module without stages": (
        dict(_target_="custom_backbone.make_without_stages", weights="none"),
        r"breaks the backbone protocol: no `stages`",
    ),
    "custom pool with the wrong shape": (
        dict(_target_="custom_backbone.make_bad_pool", weights="none"),
        r"breaks the backbone protocol: pool\(stage 0 output \(2, 4, 16, 16\)\) gave "
        r"\(2, 4, 16, 16\), expected \(N, D\)",
    ),
    "custom input spec": (
        dict(_target_="custom_backbone.make_bad_spec", weights="none"),
        r"`input_spec` needs input_size >= 1, 3 means",
    ),
    "factory that does not import": (
        dict(_target_="custom_backbone.nope", weights="none"),
        r"backbone._target_='custom_backbone.nope': cannot import it",
    ),
    "timm download offline": (
        dict(_target_=TIMM, name="test_resnet", weights="imagenet"),
        r"offline, pass backbone.weights=PATH",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_backbones_fail_in_one_line(case, tmp_path, monkeypatch):
    values, pattern = BAD[case]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download attempt fails here, never fetches
    values = {
        k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in values.items()
    }
    with pytest.raises(HpsearchError, match=pattern) as err:
        load(backbone(**values))
    assert "\n" not in str(err.value)


def test_hf_state_dict_of_a_classifier_loads_into_the_encoder(tiny_vit, tmp_path):
    from transformers import AutoConfig, ViTForImageClassification

    config = AutoConfig.from_pretrained(str(tiny_vit))
    config.num_labels = 5
    torch.manual_seed(4)
    source = ViTForImageClassification(config)  # keys vit.*, classifier.*
    torch.save(source.state_dict(), tmp_path / "clf.pt")
    bb = backbone(_target_=HF, name=str(tiny_vit), weights=str(tmp_path / "clf.pt"))
    staged = load(bb).model
    embed = staged.stages[0].module.patch_embeddings.projection.weight
    torch.testing.assert_close(embed, source.vit.embeddings.patch_embeddings.projection.weight)
    config.hidden_size, config.intermediate_size = 8, 16
    torch.save(ViTForImageClassification(config).state_dict(), tmp_path / "narrow.pt")
    bb.weights = str(tmp_path / "narrow.pt")
    with pytest.raises(HpsearchError, match=r"does not fit HF ViTModel: shape mismatch \["):
        load(bb)
