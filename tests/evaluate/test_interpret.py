"""The interpret command on tiny trained runs of each kind: the files, and their numbers against a recomputation."""

from __future__ import annotations

import re
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
    # the trivial baseline next to the model's score: always the most frequent validation class (2 of 10 each)
    support = per_class.set_index("class")["support"]
    majority = str(support.idxmax())
    assert (
        f"baseline: always '{majority}' (the most frequent validation class) scores {support.max() / 10:.4f}; "
        "chance over 5 classes 0.2000"
    ) in printed


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
    positive = float(evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime).targets.mean())
    assert f"baselines: all-negative {1 - positive:.4f}, all-positive {positive:.4f}" in printed
    # each label's best threshold by F1, recomputed from the validation probabilities
    from imgcls.targets.multi_category import best_label_thresholds

    result = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    chosen, f1 = best_label_thresholds(torch.sigmoid(result.outputs).numpy(), result.targets.numpy(), 0.4)
    assert per_label["best_threshold"].to_numpy() == pytest.approx(chosen, abs=1e-4)
    assert per_label["f1_at_best"].to_numpy() == pytest.approx(f1, abs=1e-4)
    assert (f1 >= per_label["f1"].to_numpy() - 1e-4).all()  # never worse than the run's threshold
    assert "save them for predict and export with --save-thresholds" in printed
    assert not (run / "thresholds.json").exists()  # only --save-thresholds writes into the run


def test_saved_per_label_thresholds_change_predict(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """interpret --save-thresholds writes RUN/thresholds.json; predict from the run then decides with them."""
    import json

    from trained_runs import copy_run

    run = copy_run(trained_run("multi_category", tmp_path_factory), tmp_path)
    loaded = load_run(run)
    result = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    files = [loaded.pipeline.data.items.paths[int(i)] for i in result.indices]
    before = tmp_path / "before.csv"
    assert run_cli("predict", str(run), *map(str, files), "--out", str(before), "--quiet") == 0
    assert run_cli("interpret", str(run), "--out", str(tmp_path / "i"), "--save-thresholds", "--quiet") == 0
    printed = capsys.readouterr().out
    saved = json.loads((run / "thresholds.json").read_text())
    per_label = pd.read_csv(tmp_path / "i" / "per_label.csv")
    assert saved["labels"] == list(loaded.target.vocab)
    assert saved["thresholds"] == pytest.approx(per_label["best_threshold"].tolist(), abs=1e-4)  # CSV: 4 digits
    assert "highest validation F1" in saved["chosen_by"] and f"saved {run / 'thresholds.json'}" in printed
    after = tmp_path / "after.csv"
    assert run_cli("predict", str(run), *map(str, files), "--out", str(after), "--quiet") == 0
    probs = torch.sigmoid(result.outputs).numpy()
    cuts = np.array(saved["thresholds"])
    expected = [" ".join(v for v, p, c in zip(loaded.target.vocab, row, cuts, strict=True) if p > c) for row in probs]
    labels = pd.read_csv(after, keep_default_na=False)["labels"].tolist()
    assert labels == expected
    if not np.allclose(cuts, 0.4):
        assert labels != pd.read_csv(before, keep_default_na=False)["labels"].tolist()
    assert load_run(run).pipeline.decision == tuple(saved["thresholds"])
    # a category run has no per-label thresholds: said before any work
    category = trained_run("category", tmp_path_factory)
    assert run_cli("interpret", str(category), "--out", str(tmp_path / "c"), "--save-thresholds", "--quiet") == 1
    assert "per-label thresholds are for multi-label models" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_every_picture_of_a_grey_model_is_grey(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """interpret's top_losses.png and show-results of an n_in 1 run: R == G == B in every image pixel."""
    from PIL import Image

    run = trained_run("grey", tmp_path_factory)
    assert run_cli("interpret", str(run), "--out", str(tmp_path / "grey"), "--k", "4", "--quiet") == 0
    pixels = np.asarray(Image.open(tmp_path / "grey" / "top_losses.png").convert("RGB")).astype(int)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
    colour = trained_run("category", tmp_path_factory)
    assert run_cli("interpret", str(colour), "--out", str(tmp_path / "rgb"), "--k", "4", "--quiet") == 0
    rgb = np.asarray(Image.open(tmp_path / "rgb" / "top_losses.png").convert("RGB")).astype(int)
    assert not np.array_equal(rgb[..., 0], rgb[..., 1])  # the same picture of an RGB model has colour

    # show-results titles a right prediction green and a wrong one red; the images themselves are grey
    def not_grey_nor_title(path: Path) -> float:
        """Share of pixels that are neither grey (R == G == B) nor red or green title text on white (antialiased
        red keeps G == B, green keeps R == B); a colormap (viridis: (68, 1, 84) ...) or an RGB image is neither."""
        r, g, b = np.moveaxis(np.asarray(Image.open(path).convert("RGB")).astype(int), -1, 0)
        grey, red, green = (r == g) & (g == b), (g == b) & (r > g), (r == b) & (g > r)
        return float((~(grey | red | green)).mean())

    for name, trained in (("grey", run), ("rgb", colour)):
        assert run_cli("show-results", str(trained), "--out", str(tmp_path / f"{name}.png"), "--n", "4", "-q") == 0
    assert not_grey_nor_title(tmp_path / "grey.png") == 0.0
    assert not_grey_nor_title(tmp_path / "rgb.png") > 0.1


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
    actual = errors["true_value_1"].to_numpy()
    baseline = np.abs(actual - actual.mean()).mean()  # the trivial model: always the validation mean
    found = re.search(r"baseline: predicting the validation mean gives MAE ([\d.]+)", capsys.readouterr().out)
    assert found is not None and float(found.group(1)) == pytest.approx(baseline, abs=2e-4)  # errors.csv: 4 digits
