"""Losses and metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from imgcls.spec.train import F1Spec, LossSpec, TopKSpec
from imgcls.targets import TARGETS
from imgcls.train.losses import build_loss
from imgcls.train.metrics import accuracy, accuracy_multi, build_metric, f1_macro, mae, rmse


def test_label_smoothing_against_fastais_formula() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    targets = torch.tensor([0, 1])
    loss = build_loss(LossSpec(name="label_smoothing_cross_entropy", eps=0.1), TARGETS.get("category"))
    log_p = torch.log_softmax(logits, dim=-1)
    # fastai: eps/C * mean_i sum_c -log p_ic + (1 - eps) * NLL
    expected = 0.1 / 3 * (-log_p.sum(dim=1)).mean() + 0.9 * torch.nn.functional.nll_loss(log_p, targets)
    assert float(loss(logits, targets)) == pytest.approx(float(expected), rel=1e-6)


def test_cross_entropy_with_mixed_targets_equals_mixed_losses() -> None:
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    a, b = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 3, 2, 1])
    lam = torch.tensor([0.9, 0.6, 0.5, 0.75])
    loss = build_loss(LossSpec(), TARGETS.get("category"))
    soft = lam[:, None] * torch.nn.functional.one_hot(a, 5) + (1 - lam[:, None]) * torch.nn.functional.one_hot(b, 5)
    mixed_losses = lam * loss.per_item(logits, a) + (1 - lam) * loss.per_item(logits, b)
    assert torch.allclose(loss.per_item(logits, soft.float()), mixed_losses, atol=1e-6)


def test_default_losses_by_target() -> None:
    assert build_loss(LossSpec(), TARGETS.get("category")).name == "cross_entropy"
    assert build_loss(LossSpec(), TARGETS.get("multi_category")).name == "bce_with_logits"
    assert build_loss(LossSpec(), TARGETS.get("point")).name == "mse"
    points = build_loss(LossSpec(), TARGETS.get("point"))
    assert float(points(torch.zeros(2, 4), torch.ones(2, 2, 2))) == 1.0


def test_classification_metrics() -> None:
    outputs = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0], [2.0, 1.5, 0.0]])
    targets = torch.tensor([0, 2, 2, 1])
    assert accuracy(outputs, targets) == 0.5
    assert build_metric(TopKSpec(name="top_k_accuracy", k=2)).fn(outputs, targets) == 1.0
    # per class F1: class 0: p=1/2, r=1 -> 2/3; class 1: p=0, r=0 -> 0; class 2: p=1, r=1/2 -> 2/3
    assert f1_macro(outputs, targets, 0.5) == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)


def test_multi_label_metrics() -> None:
    logits = torch.tensor([[2.0, -2.0], [0.1, -0.1]])  # probs ~[0.88, 0.12], [0.52, 0.48]
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert accuracy_multi(logits, targets, 0.5) == 0.5
    assert accuracy_multi(logits, targets, 0.45) == 0.75
    assert build_metric(F1Spec(name="f1_macro", thresh=0.5)).fn(logits, targets) == pytest.approx((2 / 3 + 0) / 2)


def test_regression_metrics() -> None:
    outputs, targets = torch.tensor([[1.0, 2.0]]), torch.tensor([[[0.0, 4.0]]])
    assert rmse(outputs, targets) == pytest.approx(math.sqrt(2.5))
    assert mae(outputs, targets) == 1.5


def test_point_error_in_pixels_of_the_model_input() -> None:
    from imgcls.train.metrics import pixel_metric, point_pixels

    # two items, one point each, on a 40 (high) x 80 (wide) input: one unit is 40 px in x and 20 px in y
    outputs = torch.tensor([[0.0, 0.0], [0.5, -0.5]])
    targets = torch.tensor([[[0.075, 0.2]], [[0.5, -0.5]]])  # 3 px right, 4 px down of the first prediction
    assert point_pixels(outputs, targets, (40, 80)) == pytest.approx(2.5)  # (5 + 0) / 2
    metric = pixel_metric((40, 80))
    assert metric.name == "error_px" and not metric.higher_is_better
    from imgcls.train.metrics import lower_is_better

    assert lower_is_better(metric.name)  # save_best and early_stopping watch it going down
