"""The interpret command on tiny trained runs of each kind: the files, and their numbers against a recomputation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from trained_runs import run_cli, trained_run

from imgcls.evaluate.load import load_run
from imgcls.train.evaluation import evaluate


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
    data = loaded.pipeline.data
    result = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    losses = torch.nn.functional.cross_entropy(result.outputs, result.targets, reduction="none")
    assert top["loss"].to_numpy() == pytest.approx(losses.sort(descending=True).values[:4].numpy(), abs=1e-4)
    names = {data.items.relative(int(i)): float(loss) for i, loss in zip(result.indices, losses, strict=True)}
    assert [names[item] for item in top["item"]] == pytest.approx(top["loss"].tolist(), abs=1e-4)
    assert (top["loss"] >= -np.log(top["probability"]) - 1e-4).all()  # the predicted class is the likeliest
    per_class = pd.read_csv(out / "per_class.csv")
    assert list(per_class["class"]) == list(load_run(run).target.vocab)


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
    assert loaded.pipeline.thresh == 0.4 and "threshold 0.40" in printed
    recorded = loaded.checkpoint.record.metrics["accuracy_multi"]
    assert f"{recorded:.4f}" in printed  # accuracy_multi at the run's threshold = the run's metric
    per_label = pd.read_csv(out / "per_label.csv")
    assert list(per_label["label"]) == list(loaded.target.vocab)
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
    root = load_run(run).pipeline.data.items.root
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
    root = load_run(run).pipeline.data.items.root
    from trained_runs import disc_height

    for _, row in errors.iterrows():
        assert row["true_value_1"] == pytest.approx(disc_height(root / str(row["item"])), abs=1e-4)
    assert errors["value_1"].between(0.0, 1.0).all()
    report = pd.read_csv(out / "regression.csv")
    assert report.loc[0, "mae"] == pytest.approx(errors["abs_error"].mean(), abs=1e-3)
    assert (out / "predicted_vs_actual.png").is_file() and (out / "largest_errors.png").is_file()
    recorded = load_run(run).checkpoint.record.metrics  # the best checkpoint's own evaluation
    assert report.loc[0, "mae"] == pytest.approx(recorded["mae"], abs=1e-3)
