"""Calibration: fits that recover known temperatures and Platt parameters, and ECE against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgcls.errors import ImgclsError
from imgcls.targets.calibration import (
    Calibration,
    binary_ece,
    ece_of_bins,
    fit_platt,
    fit_temperature,
    multiclass_ece,
    reliability_bins,
)
from imgcls.targets.category import Category
from imgcls.targets.multi_category import MultiCategory
from imgcls.targets.point import Point
from imgcls.targets.regression import Regression

N_ITEMS = 5000


def overconfident_logits(temperature: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(true logits), and the logits a model `temperature` times too sure would give:
    true logits * temperature (so true logits = outputs / temperature)."""
    generator = torch.Generator().manual_seed(seed)
    true = torch.randn(N_ITEMS, 10, generator=generator) * 2.0
    labels = torch.multinomial(torch.softmax(true, dim=1), 1, generator=generator).squeeze(1)
    return true * temperature, labels


@pytest.mark.parametrize(("temperature", "seed"), [(2.0, 0), (0.5, 1), (1.3, 2)])
def test_a_known_temperature_is_recovered_within_5_percent(temperature: float, seed: int) -> None:
    outputs, labels = overconfident_logits(temperature, seed)
    fitted = fit_temperature(outputs, labels)
    assert fitted == pytest.approx(temperature, rel=0.05)
    # it is the NLL's minimum: 2% either side is worse
    around = [0.98 * fitted, fitted, 1.02 * fitted]
    nll = [float(torch.nn.functional.cross_entropy(outputs / t, labels)) for t in around]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def test_category_calibration_keeps_the_predictions_and_lowers_ece_and_nll() -> None:
    outputs, labels = overconfident_logits(2.0, 3)
    fit = Category(tuple("abcdefghij")).fit_calibration(outputs, labels)
    assert fit.calibration.method == "temperature" and fit.calibration.temperature == pytest.approx(2.0, rel=0.05)
    calibrated = fit.calibration.apply(outputs)
    assert torch.equal(calibrated.argmax(dim=1), outputs.argmax(dim=1))
    assert torch.allclose(calibrated, outputs / fit.calibration.temperature, rtol=1e-6, atol=1e-6)
    # binned ECE of a perfectly calibrated model is ~0.02 on 5000 items (sampling noise); before: ~0.2
    assert fit.ece_after < 0.04 and fit.ece_before > 0.1 and fit.nll_after < fit.nll_before
    assert int(fit.bins_before["count"].sum()) == N_ITEMS and len(fit.bins_before) == 15
    assert ece_of_bins(fit.bins_after) == pytest.approx(fit.ece_after, abs=1e-6)


def test_known_platt_parameters_are_recovered() -> None:
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(N_ITEMS, 4, generator=generator) * 2.0
    a, b = torch.tensor([0.5, 1.0, 2.0, 1.5]), torch.tensor([-1.0, 0.0, 0.5, 2.0])
    targets = torch.bernoulli(torch.sigmoid(a * logits + b), generator=generator)
    fitted_a, fitted_b = fit_platt(logits, targets)
    assert np.array(fitted_a) == pytest.approx(a.numpy(), rel=0.1)
    assert np.array(fitted_b) == pytest.approx(b.numpy(), abs=0.1)
    fit = MultiCategory(("w", "x", "y", "z")).fit_calibration(logits, targets)
    assert fit.calibration.method == "platt" and fit.ece_after < fit.ece_before


def test_a_label_without_positives_gets_finite_platt_parameters() -> None:
    logits = torch.linspace(-3, 1, 40).reshape(20, 2)
    targets = torch.zeros(20, 2)
    targets[::2, 1] = 1.0
    a, b = fit_platt(logits, targets)
    assert all(np.isfinite(a)) and all(np.isfinite(b)) and all(v > 0 for v in a)
    # Platt's targets: the empty label's probabilities approach 1 / (N- + 2) = 1/22, not 0
    calibrated = torch.sigmoid(Calibration("platt", a=a, b=b).apply(logits))
    assert float(calibrated[:, 0].mean()) == pytest.approx(1 / 22, abs=0.02)


# Six items, three classes: top probabilities 0.90 (right) and 0.92 (wrong) share bin 13 of 15; 0.70 right in bin 10;
# 0.62 wrong in bin 9; 0.45 right in bin 6; 0.99 right in bin 14. By hand:
# ECE = 2/6 |0.5 - 0.91| + 1/6 |1 - 0.70| + 1/6 |0 - 0.62| + 1/6 |1 - 0.45| + 1/6 |1 - 0.99| = 2.30 / 6
SIX_PROBS = [
    [0.90, 0.06, 0.04],
    [0.04, 0.04, 0.92],
    [0.20, 0.70, 0.10],
    [0.62, 0.30, 0.08],
    [0.45, 0.35, 0.20],
    [0.005, 0.005, 0.99],
]
SIX_LABELS = [0, 1, 1, 2, 0, 2]
SIX_ECE = 2.30 / 6


def test_ece_equals_the_hand_computation_on_six_items() -> None:
    probs, labels = torch.tensor(SIX_PROBS), torch.tensor(SIX_LABELS)
    assert multiclass_ece(probs, labels) == pytest.approx(SIX_ECE, abs=1e-6)
    top, predicted = probs.max(dim=1)
    bins = reliability_bins(top, (predicted == labels).double())
    filled = bins[bins["count"] > 0]
    assert filled["bin"].tolist() == [6, 9, 10, 13, 14] and filled["count"].tolist() == [1, 1, 1, 2, 1]
    assert filled["accuracy"].tolist() == [1.0, 0.0, 1.0, 0.5, 1.0]
    assert ece_of_bins(bins) == pytest.approx(SIX_ECE, abs=1e-6)
    assert Category(("a", "b", "c"))._ece(probs, labels) == pytest.approx(SIX_ECE, abs=1e-6)


def test_a_confidence_of_exactly_one_is_in_the_last_bin() -> None:
    # [14/15, 1] holds both: accuracy 0.5, confidence 0.975 -> ECE 0.475 (torchmetrics alone opens a 16th bin for
    # p = 1 and would give (|0 - 1| + |1 - 0.95|) / 2 = 0.525)
    probs, labels = torch.tensor([[1.0, 0.0], [0.95, 0.05]]), torch.tensor([1, 0])
    assert multiclass_ece(probs, labels) == pytest.approx(0.475, abs=1e-6)
    bins = reliability_bins(probs.max(dim=1).values, torch.tensor([0.0, 1.0]))
    assert int(bins["count"].iloc[-1]) == 2 and ece_of_bins(bins) == pytest.approx(0.475, abs=1e-6)


def test_multilabel_ece_is_over_every_item_label_probability() -> None:
    # four cells: p 0.1 (absent) and 0.05 (present) in bin 0 and 1 -> bins 0: {0.05 present}, 1: {0.1 absent};
    # 0.8 present and 0.85 absent in bin 12. ECE = 1/4 |1 - 0.05| + 1/4 |0 - 0.1| + 2/4 |0.5 - 0.825|
    probs = torch.tensor([[0.1, 0.8], [0.05, 0.85]])
    targets = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    expected = 0.95 / 4 + 0.1 / 4 + 2 * 0.325 / 4
    assert binary_ece(probs, targets) == pytest.approx(expected, abs=1e-6)
    assert MultiCategory(("x", "y"))._ece(probs, targets) == pytest.approx(expected, abs=1e-6)
    assert ece_of_bins(reliability_bins(probs.reshape(-1), targets.reshape(-1))) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("target", [Point(1), Regression(2)])
def test_points_and_regression_have_no_calibration(target: Point | Regression) -> None:
    assert target.calibration_method is None
    with pytest.raises(ImgclsError, match="calibration needs a classifier"):
        target.fit_calibration(torch.zeros(4, target.n_out), torch.zeros(4, target.n_out))


def test_min_confidence_withholds_by_the_targets_rule() -> None:
    category = Category(("cat", "dog"))
    values = np.array([0.4, 0.6])
    row = category.prediction_row(values, None, None, 2, 0.5)
    assert category.withhold(row, values, 0.7, 0.5)["label"] == "unknown"
    assert category.withhold(row, values, 0.6, 0.5) == {"label": "dog", **row}
    multi = MultiCategory(("a", "b", "c"))
    values = np.array([0.9, 0.6, 0.2])
    row = multi.prediction_row(values, None, None, 3, 0.5)
    assert row["labels"] == "a b" and multi.withhold(row, values, 0.7, 0.5)["labels"] == "a"
    with pytest.raises(ImgclsError, match="--min-confidence needs a classifier"):
        Point(1).withhold({}, np.zeros(2), 0.5, 0.5)


def test_a_validation_set_predicted_all_right_keeps_temperature_one() -> None:
    outputs, labels = overconfident_logits(2.0, 5)
    right = outputs.argmax(dim=1)
    fit = Category(tuple("abcdefghij")).fit_calibration(outputs, right)  # every label is the top class
    assert fit.calibration.temperature == 1.0 and "no temperature is fitted" in fit.note
    assert fit.ece_after == fit.ece_before
    fit = Category(tuple("abcdefghij")).fit_calibration(outputs, labels)
    assert fit.note == "" and fit.calibration.temperature != 1.0
