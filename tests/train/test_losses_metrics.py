"""Losses and metrics against hand-computed values."""

from __future__ import annotations

import math
import typing

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from imgcls.errors import SpecError
from imgcls.spec.train import AccuracySpec, F1Spec, LossSpec, TopKSpec
from imgcls.targets import TARGETS
from imgcls.train.losses import PER_ITEM, Loss, build_loss
from imgcls.train.metrics import accuracy, accuracy_multi, balanced_accuracy, build_metric, f1_macro, mae, rmse


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


# --- class imbalance: weights, focal, balanced accuracy ------------------------------------------------------

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [-0.5, 1.5, 0.0], [4.0, -2.0, 1.0]])
CLASSES = torch.tensor([0, 1, 2, 2])


def test_focal_with_gamma_0_equals_cross_entropy() -> None:
    category = TARGETS.get("category")
    focal = build_loss(LossSpec(name="focal", gamma=0.0), category)
    plain = build_loss(LossSpec(), category)
    assert torch.allclose(focal.per_item(LOGITS, CLASSES), plain.per_item(LOGITS, CLASSES), atol=1e-6)
    weights = [0.5, 2.0, 1.25]
    weighted_focal = build_loss(LossSpec(name="focal", gamma=0.0), category, weights)
    weighted = build_loss(LossSpec(), category, weights)
    assert torch.allclose(weighted_focal.per_item(LOGITS, CLASSES), weighted.per_item(LOGITS, CLASSES), atol=1e-6)


def test_focal_against_the_papers_formula() -> None:
    loss = build_loss(LossSpec(name="focal", gamma=2.0), TARGETS.get("category"), [1.0, 3.0, 0.5])
    p = torch.softmax(LOGITS, dim=-1)[torch.arange(4), CLASSES]
    alpha_t = torch.tensor([1.0, 3.0, 0.5, 0.5])
    expected = -alpha_t * (1 - p) ** 2 * torch.log(p)  # Lin et al. 2017, eq. 5, with alpha_t per class
    assert torch.allclose(loss.per_item(LOGITS, CLASSES), expected, atol=1e-6)
    # soft (MixUp) targets: mixing the targets mixes the losses, as for cross-entropy
    other, lam = torch.tensor([1, 0, 0, 1]), torch.tensor([0.7, 0.5, 0.9, 0.6])
    soft = lam[:, None] * F.one_hot(CLASSES, 3) + (1 - lam[:, None]) * F.one_hot(other, 3)
    mixed = lam * loss.per_item(LOGITS, CLASSES) + (1 - lam) * loss.per_item(LOGITS, other)
    assert torch.allclose(loss.per_item(LOGITS, soft.float()), mixed, atol=1e-6)


def test_class_weights_weigh_each_item_by_its_class() -> None:
    weights = [0.5, 2.0, 1.25]
    loss = build_loss(LossSpec(class_weights=weights), TARGETS.get("category"), weights)
    ce = F.cross_entropy(LOGITS, CLASSES, reduction="none")
    expected = torch.tensor([0.5, 2.0, 1.25, 1.25]) * ce
    assert torch.allclose(loss.per_item(LOGITS, CLASSES), expected, atol=1e-6)
    assert float(loss(LOGITS, CLASSES)) == pytest.approx(float(expected.mean()), rel=1e-6)  # mean over items


def test_pos_weight_and_sigmoid_focal() -> None:
    multi = TARGETS.get("multi_category")
    logits = torch.tensor([[2.0, -1.0, 0.3], [-0.5, 0.8, -2.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    pos_weight = [3.0, 0.5, 2.0]
    weighted = build_loss(LossSpec(), multi, pos_weight)
    expected = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=torch.tensor(pos_weight), reduction="none")
    assert torch.allclose(weighted.per_item(logits, labels), expected.mean(dim=1), atol=1e-6)
    plain_focal = build_loss(LossSpec(name="focal", gamma=0.0), multi)
    bce = build_loss(LossSpec(), multi)
    assert torch.allclose(plain_focal.per_item(logits, labels), bce.per_item(logits, labels), atol=1e-6)
    # torchvision's sigmoid_focal_loss formula at gamma 2, alpha 0.25
    focal = build_loss(LossSpec(name="focal", gamma=2.0, alpha=0.25), multi)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    p_t = p * labels + (1 - p) * (1 - labels)
    alpha_t = 0.25 * labels + 0.75 * (1 - labels)
    reference = (alpha_t * ce * (1 - p_t) ** 2).mean(dim=1)
    assert torch.allclose(focal.per_item(logits, labels), reference, atol=1e-6)


def test_focal_gradients_stay_finite_for_confident_outputs() -> None:
    logits = torch.tensor([[60.0, -60.0, 0.0]], requires_grad=True)  # p = 1 exactly in float32
    loss = build_loss(LossSpec(name="focal", gamma=0.5), TARGETS.get("category"))
    loss(logits, torch.tensor([0])).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_present() -> None:
    from sklearn.metrics import balanced_accuracy_score

    outputs = torch.tensor([[3.0, 0, 0, 0], [3.0, 0, 0, 0], [3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 3.0, 0, 0]])
    targets = torch.tensor([0, 0, 1, 1, 2])  # class 3 has no item: left out, as sklearn does
    # recalls: class 0 2/2, class 1 1/2, class 2 0/1 -> (1 + 0.5 + 0) / 3
    assert build_metric(AccuracySpec(name="balanced_accuracy")).fn(outputs, targets) == pytest.approx(0.5)
    rng = torch.Generator().manual_seed(0)
    outputs, targets = torch.randn(200, 5, generator=rng), torch.randint(0, 5, (200,), generator=rng)
    reference = balanced_accuracy_score(targets.numpy(), outputs.argmax(dim=1).numpy())
    assert balanced_accuracy(outputs, targets) == pytest.approx(reference, abs=1e-12)


def test_every_loss_name_of_the_spec_has_its_per_item_loss_and_no_other() -> None:
    names = set(typing.get_args(LossSpec.model_fields["name"].annotation)) - {"auto"}
    assert set(PER_ITEM.names()) == names


def test_each_loss_per_item_against_torch() -> None:
    preds, classes = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    values = torch.rand(4, 3)
    assert torch.allclose(
        Loss("cross_entropy").per_item(preds, classes), F.cross_entropy(preds, classes, reduction="none")
    )
    assert torch.allclose(Loss("l1").per_item(preds, values), (preds - values).abs().mean(dim=1))
    assert torch.allclose(Loss("mse").per_item(preds, values), ((preds - values) ** 2).mean(dim=1))
    bce = F.binary_cross_entropy_with_logits(preds, values, reduction="none").mean(dim=1)
    assert torch.allclose(Loss("bce_with_logits").per_item(preds, values), bce)
    with pytest.raises(SpecError, match="unknown loss 'msee' \\(did you mean 'mse'\\?\\)"):
        Loss("msee").per_item(preds, values)
