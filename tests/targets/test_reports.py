"""The targets' report computations on known predictions: confusion matrices, most-confused pairs, per-class and
per-label reports, the threshold sweep, point distances and regression errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgcls.targets.base import top_losses
from imgcls.targets.category import confusion_matrix, most_confused, normalized_rows, per_class_report
from imgcls.targets.multi_category import THRESHOLDS, multilabel_report, threshold_sweep
from imgcls.targets.point import point_distances
from imgcls.targets.regression import regression_report

VOCAB = ["ant", "bee", "cat"]
# actual -> predicted: ant ok, ant->bee, bee ok x2, cat->ant, cat->bee x2, cat ok
ACTUAL = np.array([0, 0, 1, 1, 2, 2, 2, 2])
PREDICTED = np.array([0, 1, 1, 1, 0, 1, 1, 2])


def test_confusion_matrix_counts_actual_rows_and_predicted_columns() -> None:
    matrix = confusion_matrix(ACTUAL, PREDICTED, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 2, 1]]
    assert normalized_rows(matrix) == pytest.approx(np.array([[0.5, 0.5, 0], [0, 1, 0], [0.25, 0.5, 0.25]]))
    assert normalized_rows(np.zeros((2, 2), dtype=np.int64)).tolist() == [[0, 0], [0, 0]]


def test_most_confused_pairs_most_frequent_first_then_by_name() -> None:
    matrix = confusion_matrix(ACTUAL, PREDICTED, 3)
    assert most_confused(matrix, VOCAB) == [("cat", "bee", 2), ("ant", "bee", 1), ("cat", "ant", 1)]
    assert most_confused(matrix, VOCAB, min_val=2) == [("cat", "bee", 2)]
    assert most_confused(matrix, VOCAB, min_val=3) == []


def test_per_class_precision_recall_f1() -> None:
    report = per_class_report(confusion_matrix(ACTUAL, PREDICTED, 3), VOCAB).set_index("class")
    # bee: 2 right of 5 predicted, 2 of 2 actual; ant: 1 of 2 predicted, 1 of 2 actual; cat: 1 of 1, 1 of 4
    assert report.loc["bee", "precision"] == pytest.approx(0.4) and report.loc["bee", "recall"] == 1.0
    assert report.loc["bee", "f1"] == pytest.approx(2 * 0.4 / 1.4)
    assert report.loc["ant", "f1"] == pytest.approx(0.5)
    assert report.loc["cat", "precision"] == 1.0 and report.loc["cat", "recall"] == 0.25
    assert report["support"].tolist() == [2, 2, 4]


def test_top_losses_largest_first_ties_in_item_order() -> None:
    losses = torch.tensor([0.1, 2.0, 0.5, 2.0, 3.0])
    assert top_losses(losses, 3).tolist() == [4, 1, 3]
    assert top_losses(losses, 10).tolist() == [4, 1, 3, 2, 0]


def test_multilabel_report_per_label_at_the_threshold() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.7], [0.2, 0.8], [0.3, 0.2]])
    targets = np.array([[1, 0], [0, 1], [0, 0], [1, 0]], dtype=np.float32)
    report = multilabel_report(probs, targets, ["a", "b"], thresh=0.5).set_index("label")
    # a: predicted items 0, 1 (item 0 right); actual items 0, 3. b: predicted items 1, 2; actual item 1.
    assert report.loc["a"].to_dict() == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 0.5, "support": 2, "predicted": 2}
    )
    assert report.loc["b", "precision"] == 0.5 and report.loc["b", "recall"] == 1.0
    assert report.loc["b", "accuracy"] == 0.75


def test_threshold_sweep_is_accuracy_multi_on_the_probabilities() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.3]])
    targets = np.array([[1.0, 0.0], [0.0, 0.0]])
    accuracies = threshold_sweep(probs, targets, np.array([0.05, 0.5, 0.7, 0.95]))
    # 0.05: everything on (1 of 4 right); 0.5: 0.9 and 0.6 on (3 right); 0.7: only 0.9 (all 4); 0.95: none (3)
    assert accuracies.tolist() == [0.25, 0.75, 1.0, 0.75]
    assert len(THRESHOLDS) == 29 and THRESHOLDS[0] == 0.05 and THRESHOLDS[-1] == 0.95


def test_point_distances_are_mean_euclidean_per_item() -> None:
    predicted = np.array([[[3.0, 4.0], [0.0, 0.0]], [[1.0, 1.0], [2.0, 2.0]]])
    actual = np.zeros((2, 2, 2))
    assert point_distances(predicted, actual) == pytest.approx([2.5, (np.sqrt(2) + np.sqrt(8)) / 2])


def test_regression_report_per_target() -> None:
    actual = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    predicted = np.array([[1.5, 4.0], [2.0, 4.0], [2.0, 7.0]])
    report = regression_report(predicted, actual)
    assert list(report["target"]) == ["value_1", "value_2"]
    # errors: target 1 (0.5, 0, -1); target 2 (-1, -1, 2) around a constant actual value
    assert report["mae"].tolist() == pytest.approx([0.5, 4 / 3])
    assert report["rmse"].tolist() == pytest.approx([np.sqrt(1.25 / 3), np.sqrt(2.0)])
    assert report["bias"].tolist() == pytest.approx([-0.5 / 3, 0.0])
    assert report["r2"].tolist() == pytest.approx([1 - 1.25 / 2, 0.0])  # SST of (1, 2, 3) is 2


def test_best_label_thresholds_maximize_each_labels_f1() -> None:
    from imgcls.targets.base import label_vector, threshold_text
    from imgcls.targets.multi_category import best_label_thresholds

    thresholds = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    # label a: positives at 0.8 and 0.6, a negative at 0.4 -> any cut in [0.4, 0.6) is perfect; 0.5 is one.
    # label b: a positive at 0.2 among negatives at 0.05 -> only 0.1 finds it (F1 1).
    # label c: no positive -> keeps the fallback 0.45.
    probs = np.array([[0.8, 0.2, 0.3], [0.6, 0.05, 0.2], [0.4, 0.05, 0.1]])
    targets = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
    chosen, f1 = best_label_thresholds(probs, targets, 0.45, thresholds)
    assert chosen.tolist() == [0.5, 0.1, 0.45] and f1.tolist() == [1.0, 1.0, 0.0]
    # ties go to the threshold nearest the fallback: with a gap from 0.05 to 0.92 every cut is perfect
    wide = np.array([[0.95, 0.2, 0.3], [0.92, 0.05, 0.2], [0.05, 0.05, 0.1]])
    assert best_label_thresholds(wide, targets, 0.75, thresholds)[0][0] == 0.7
    assert best_label_thresholds(wide, targets, 0.15, thresholds)[0][0] == 0.1
    assert label_vector(0.3, 3).tolist() == [0.3, 0.3, 0.3]
    assert label_vector((0.1, 0.2), 2).tolist() == [0.1, 0.2]
    with pytest.raises(ValueError, match="3 thresholds for 2 labels"):
        label_vector((0.1, 0.2, 0.3), 2)
    assert threshold_text((0.35, 0.5), ["circle", "cross"]) == "circle 0.35, cross 0.5"
    assert threshold_text(0.4) == "0.4" and threshold_text(0.27500001) == "0.275"


def test_multilabel_decisions_take_one_threshold_per_label() -> None:
    from imgcls.targets.multi_category import MultiCategory

    target = MultiCategory(("a", "b"))
    values = np.array([0.6, 0.6])
    assert target.decide(values, 0.5).tolist() == [1, 1]
    assert target.decide(values, (0.5, 0.7)).tolist() == [1, 0]
    row = target.prediction_row(values, None, None, 3, (0.7, 0.5))
    assert row["labels"] == "b" and row["prob_a"] == pytest.approx(0.6)
    report = multilabel_report(np.array([[0.6, 0.6]]), np.array([[1.0, 1.0]]), ["a", "b"], (0.5, 0.7))
    assert report["recall"].tolist() == [1.0, 0.0]
