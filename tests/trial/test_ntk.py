"""The seed's first-order equation, checked against a real FT step of our Finetuner."""

from __future__ import annotations

import pytest
import torch

from hpsearch.app import compose_config
from hpsearch.data import Split
from hpsearch.data.pipeline import InputPipeline
from hpsearch.models import Pretrained, build_transfer_net, new_backbone
from hpsearch.trial.ft import Finetuner
from hpsearch.trial.ntk import entk, first_order_feature_change


def one_sgd_step_change(
    arch: str, lr: float, layers_copied: int
) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = compose_config(
        [
            f"backbone.arch={arch}",
            "backbone.weights=none",
            f"backbone.layers_copied={layers_copied}",
            "backbone.feature_dim=6",
            "ft.epochs=1",
            "ft.optimizer=sgd",
            "ft.momentum=0",
            "ft.weight_decay=0",
            "ft.schedule=constant",
            f"ft.lr={lr}",
            "ft.batch_size=24",
        ]
    )
    gen = torch.Generator().manual_seed(0)
    d, n_classes = 5, 3
    x = torch.randn(24, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, n_classes, (24,), generator=gen)
    x_tilde = torch.randn(7, d, generator=gen, dtype=torch.float64)
    torch.manual_seed(1)
    pretrained = Pretrained(new_backbone(cfg.backbone, d), "test")
    net = build_transfer_net(pretrained, cfg.backbone, cfg.head, d, n_classes, seed=2).double()
    with torch.no_grad():  # a head with real weights, so the direction is not ~0
        net.head[-1].weight.normal_(0, 1.0, generator=gen)
    predicted = first_order_feature_change(net.copied, net.head, x_tilde, x, y, lr)

    pipeline = InputPipeline(cfg.data, "vector", torch.device("cpu"))
    z_before = net.features(x_tilde).detach()
    Finetuner(net, Split(x, y), Split(x, y), pipeline, cfg.ft, seed=0, eval_batch_size=64).run()
    observed = net.features(x_tilde).detach() - z_before
    return predicted, observed


def relative_error(predicted: torch.Tensor, observed: torch.Tensor) -> float:
    return float((predicted - observed).norm() / observed.norm())


def test_linear_backbone_matches_entk_prediction_exactly():
    predicted, observed = one_sgd_step_change("linear", lr=0.1, layers_copied=1)
    assert observed.norm() > 1e-3  # the step really moved the features
    assert relative_error(predicted, observed) <= 1e-4


def test_linear_backbone_entk_is_xtilde_dot_x_identity():
    torch.manual_seed(0)
    cfg = compose_config(["backbone.weights=none", "backbone.feature_dim=4"])
    backbone = new_backbone(cfg.backbone, 3).double()
    a, b = torch.randn(2, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    kernel = entk(backbone, a, b)
    expected = (a @ b.T)[:, :, None, None] * torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(kernel, expected)


@pytest.mark.parametrize("lr", [1e-3])
def test_mlp_backbone_matches_entk_prediction_to_first_order(lr):
    predicted, observed = one_sgd_step_change("mlp", lr=lr, layers_copied=2)
    assert observed.norm() > 0
    assert relative_error(predicted, observed) <= 1e-2
