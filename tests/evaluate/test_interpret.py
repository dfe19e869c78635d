"""Interpretation: confusion matrices, most-confused pairs, per-class and per-label reports and the threshold
sweep on known predictions; the interpret command on tiny trained runs of each kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from trained_runs import run_cli, trained_run

from imgcls.evaluate.interpret import (
    THRESHOLDS,
    confusion_matrix,
    most_confused,
    multilabel_report,
    normalized_rows,
    per_class_report,
    point_distances,
    regression_report,
    threshold_sweep,
    top_losses,
)
from imgcls.evaluate.load import load_run, valid_loader, validation_data
from imgcls.evaluate.passes import geometry_pass

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


def test_threshold_sweep_is_accuracy_multi_on_the_sigmoid() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.3]])
    outputs = torch.log(probs / (1 - probs))
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    accuracies = threshold_sweep(outputs, targets, np.array([0.05, 0.5, 0.7, 0.95]))
    # 0.05: everything on (1 of 4 right); 0.5: 0.9 and 0.6 on (3 right); 0.7: only 0.9 (all 4); 0.95: none (3)
    assert accuracies.tolist() == [0.25, 0.75, 1.0, 0.75]
    assert len(THRESHOLDS) == 29 and THRESHOLDS[0] == 0.05 and THRESHOLDS[-1] == 0.95


def test_point_distances_are_mean_euclidean_per_item() -> None:
    predicted = np.array([[[3.0, 4.0], [0.0, 0.0]], [[1.0, 1.0], [2.0, 2.0]]])
    actual = np.zeros((2, 2, 2))
    assert point_distances(predicted, actual) == pytest.approx([2.5, (np.sqrt(2) + np.sqrt(8)) / 2])


# --- the command --------------------------------------------------------------------------------------------------


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


def test_interpret_classification(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = trained_run("category", tmp_path_factory)
    out = tmp_path / "interpret"
    assert run_cli("interpret", str(run), "--out", str(out), "--k", "4", "--min-count", "2", "--quiet") == 0
    printed = capsys.readouterr().out
    assert "most confused" in printed or "no pair of classes" in printed
    for name in (
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "confusion_matrix_normalized.csv",
        "confusion_matrix_normalized.png",
        "most_confused.csv",
        "per_class.csv",
        "top_losses.csv",
        "top_losses.png",
    ):
        assert (out / name).is_file(), name
    counts = pd.read_csv(out / "confusion_matrix.csv", index_col=0)
    assert counts.to_numpy().sum() == 10
    shares = pd.read_csv(out / "confusion_matrix_normalized.csv", index_col=0).to_numpy()
    assert shares.sum(axis=1) == pytest.approx(np.ones(5), abs=1e-3)
    pairs = pd.read_csv(out / "most_confused.csv")
    assert (pairs["count"] >= 2).all()
    top = pd.read_csv(out / "top_losses.csv")
    assert len(top) == 4 and top["loss"].is_monotonic_decreasing
    # the four largest cross-entropies of the validation set, recomputed here
    loaded = load_run(run)
    data = validation_data(loaded)
    result = geometry_pass(loaded.model, valid_loader(loaded, data), loaded.runtime)
    losses = torch.nn.functional.cross_entropy(result.outputs, result.targets, reduction="none")
    assert top["loss"].to_numpy() == pytest.approx(losses.sort(descending=True).values[:4].numpy(), abs=1e-4)
    names = {data.items.relative(int(i)): float(loss) for i, loss in zip(result.indices, losses, strict=True)}
    assert [names[item] for item in top["item"]] == pytest.approx(top["loss"].tolist(), abs=1e-4)
    assert (top["loss"] >= -np.log(top["probability"]) - 1e-4).all()  # the predicted class is the likeliest
    per_class = pd.read_csv(out / "per_class.csv")
    assert list(per_class["class"]) == load_run(run).info.vocab


def test_interpret_multilabel_reports_the_best_threshold(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = trained_run("multi_category", tmp_path_factory)
    out = tmp_path / "interpret"
    assert run_cli("interpret", str(run), "--out", str(out), "--quiet") == 0
    printed = capsys.readouterr().out
    sweep = pd.read_csv(out / "threshold_sweep.csv")
    best = sweep.loc[sweep["accuracy_multi"].idxmax()]
    assert f"best {best['threshold']:.3f}" in printed or f"best threshold {best['threshold']:.3f}" in printed
    assert len(sweep) == 29
    loaded = load_run(run)
    assert loaded.thresh == 0.4 and "threshold 0.40" in printed
    recorded = loaded.checkpoint.meta["metrics"]["accuracy_multi"]
    assert f"{recorded:.4f}" in printed  # accuracy_multi at the run's threshold = the run's metric
    per_label = pd.read_csv(out / "per_label.csv")
    assert list(per_label["label"]) == loaded.info.vocab
    assert (out / "threshold_sweep.png").is_file()


def test_interpret_points_reports_pixel_errors(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = trained_run("point", tmp_path_factory)
    out = tmp_path / "interpret"
    assert run_cli("interpret", str(run), "--out", str(out), "--k", "3", "--quiet") == 0
    printed = capsys.readouterr().out
    errors = pd.read_csv(out / "point_errors.csv")
    assert len(errors) == 5 and errors["error_px"].is_monotonic_decreasing
    recomputed = np.hypot(errors["x_1"] - errors["true_x_1"], errors["y_1"] - errors["true_y_1"])
    assert errors["error_px"].to_numpy() == pytest.approx(recomputed.to_numpy(), abs=2e-3)
    assert f"mean error {errors['error_px'].mean():.2f} px" in printed
    # the true points are the labels as written next to each image, in original pixels
    root = validation_data(load_run(run)).items.root
    for _, row in errors.iterrows():
        label = (root / str(row["item"]).replace("_rgb.jpg", "_pts.txt")).read_text().split()
        assert [row["true_x_1"], row["true_y_1"]] == pytest.approx([float(v) for v in label], abs=1e-3)
    assert (out / "largest_errors.png").is_file()


def test_interpret_regression_reports_errors_per_target(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = trained_run("regression", tmp_path_factory)
    out = tmp_path / "interpret"
    assert run_cli("interpret", str(run), "--out", str(out), "--k", "3", "--quiet") == 0
    errors = pd.read_csv(out / "errors.csv")
    assert len(errors) == 5 and errors["abs_error"].is_monotonic_decreasing
    assert errors["abs_error"].to_numpy() == pytest.approx(
        (errors["value_1"] - errors["true_value_1"]).abs().to_numpy(), abs=2e-4
    )
    # the actual values are the callable's labels; the predictions lie in the model's y_range
    root = validation_data(load_run(run)).items.root
    from trained_runs import disc_height

    for _, row in errors.iterrows():
        assert row["true_value_1"] == pytest.approx(disc_height(root / str(row["item"])), abs=1e-4)
    assert errors["value_1"].between(0.0, 1.0).all()
    report = pd.read_csv(out / "regression.csv")
    assert report.loc[0, "mae"] == pytest.approx(errors["abs_error"].mean(), abs=1e-3)
    assert (out / "predicted_vs_actual.png").is_file() and (out / "largest_errors.png").is_file()
    recorded = load_run(run).checkpoint.meta["metrics"]  # the best checkpoint's own evaluation
    assert report.loc[0, "mae"] == pytest.approx(recorded["mae"], abs=1e-3)
