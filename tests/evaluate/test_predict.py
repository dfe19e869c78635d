"""predict: the validation transforms on files, the same numbers as validation, points back in original pixels,
and unreadable files listed instead of stopping the batch."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_image
from trained_runs import run_cli, trained_run

from imgcls.data.item_tfms import RandomResizedCrop, Resize, item_to_source
from imgcls.evaluate.load import load_run
from imgcls.evaluate.predict import find_images, load_predictor, predict_files, source_size
from imgcls.targets.point import as_points, scale_points
from imgcls.train.evaluation import Predictions, evaluate


@pytest.mark.parametrize(
    "transform",
    [
        Resize((40, 56), "crop"),
        Resize((40, 56), "pad"),
        Resize((30, 30), "squish"),
        RandomResizedCrop((32, 48)),
        None,
    ],
)
def test_item_frame_points_map_back_to_source_pixels(transform: Resize | RandomResizedCrop | None) -> None:
    size = (173, 91)
    pixels = np.array([[0.0, 0.0], [12.5, 80.0], [173.0, 91.0], [100.25, 3.5]], dtype=np.float32)
    scaled = scale_points(pixels, size)
    window = transform.window(size, None) if transform is not None else None
    item_frame = window.map_points(scaled, size) if window is not None else scaled
    assert item_to_source(item_frame, window, size) == pytest.approx(pixels, abs=1e-3)
    if transform is not None:  # a training window too (random position)
        random_window = transform.window(size, random.Random(3))
        assert item_to_source(random_window.map_points(scaled, size), random_window, size) == pytest.approx(
            pixels, abs=1e-3
        )


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run("category", tmp_path_factory)


def _valid_files(run: Path) -> tuple[list[Path], Predictions]:
    loaded = load_run(run)
    data = loaded.pipeline.data
    result = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    return [data.items.paths[int(i)] for i in result.indices], result


def test_predictions_equal_the_validation_outputs(classification_run: Path) -> None:
    files, result = _valid_files(classification_run)
    predictor = load_predictor(classification_run)
    predictions = predict_files(predictor, list(reversed(files)), bs=3)  # other order, other batches
    values = np.stack([p.values for p in reversed(predictions)])
    expected = torch.softmax(result.outputs, dim=-1).numpy()
    assert values == pytest.approx(expected, abs=1e-5)


def test_a_folder_with_a_broken_file_is_predicted_and_the_file_listed(
    classification_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files, result = _valid_files(classification_run)
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(files[0], folder / "a.jpg")
    shutil.copy(files[1], folder / "nested" / "b.JPG")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("not an image, not listed")
    (folder / ".hidden.jpg").write_bytes(b"skipped")
    out = tmp_path / "out" / "predictions.csv"
    missing = tmp_path / "missing.png"
    code = run_cli("predict", str(classification_run), str(folder), str(missing), "--out", str(out), "--top-k", "2")
    assert code == 0
    printed = capsys.readouterr().out
    frame = pd.read_csv(out, keep_default_na=False)
    assert [Path(f).name for f in frame["file"]] == ["a.jpg", "broken.jpg", "b.JPG", "missing.png"]
    assert list(frame.columns) == ["file", "error", "pred_1", "prob_1", "pred_2", "prob_2"]
    errors = dict(zip(frame["file"].map(lambda f: Path(f).name), frame["error"], strict=True))
    assert errors["a.jpg"] == "" and errors["b.JPG"] == ""
    assert "not an image" in errors["broken.jpg"] and "does not exist" in errors["missing.png"]
    assert "cannot read" in printed and "broken.jpg" in printed and "missing.png" in printed
    vocab = load_run(classification_run).target.vocab
    probs = torch.softmax(result.outputs[0], dim=-1)
    row = frame.iloc[0]
    assert row["pred_1"] == vocab[int(probs.argmax())] and float(row["prob_1"]) == pytest.approx(float(probs.max()))
    assert float(row["prob_1"]) >= float(row["prob_2"])


def test_no_image_at_all_is_an_error(classification_run: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert run_cli("predict", str(classification_run), str(tmp_path / "empty"), "--out", str(tmp_path / "p.csv")) == 3


def test_images_of_different_sizes_without_an_item_transform(classification_run: Path, tmp_path: Path) -> None:
    """With no item transform nothing makes the images the same size: batches are cut where the size changes."""
    sizes = [(30, 20), (30, 20), (24, 36), (30, 20)]
    files = [write_image(tmp_path / "in" / f"{n}.png", size) for n, size in enumerate(sizes)]
    assert find_images([tmp_path / "in"]) == files
    predictor = load_predictor(classification_run)
    predictor.item_tfm = None
    predictor.augment = predictor.augment.with_size(None)
    batched = predict_files(predictor, files, bs=8)
    alone = [predict_files(predictor, [file], bs=1)[0] for file in files]
    assert [p.size for p in batched] == sizes
    for together, single in zip(batched, alone, strict=True):
        assert together.values == pytest.approx(single.values, abs=1e-5)


def test_multilabel_predictions_use_the_runs_threshold_or_the_option(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run = trained_run("multi_category", tmp_path_factory)
    files, result = _valid_files(run)
    vocab = load_run(run).target.vocab
    out = tmp_path / "p.csv"
    assert run_cli("predict", str(run), *map(str, files), "--out", str(out), "--quiet") == 0
    frame = pd.read_csv(out, keep_default_na=False)
    probs = torch.sigmoid(result.outputs).numpy()
    assert frame[[f"prob_{label}" for label in vocab]].to_numpy() == pytest.approx(probs, abs=1e-5)
    expected = [" ".join(v for v, p in zip(vocab, row, strict=True) if p > 0.4) for row in probs]  # the run's 0.4
    assert frame["labels"].tolist() == expected
    assert run_cli("predict", str(run), *map(str, files), "--out", str(out), "--thresh", "0", "--quiet") == 0
    assert set(pd.read_csv(out)["labels"]) == {" ".join(vocab)}
    assert run_cli("predict", str(run), *map(str, files), "--out", str(out), "--thresh", "1", "--quiet") == 0
    assert pd.read_csv(out, keep_default_na=False)["labels"].tolist() == [""] * len(files)


@pytest.fixture(scope="module")
def point_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run("point", tmp_path_factory)


def test_point_targets_map_back_to_the_labels_in_original_pixels(point_run: Path) -> None:
    """Validation targets went through the item window (pad to 40x56), the batch resize and the centre square
    crop (min_scale < 1); the inverse chain predict uses brings them back to the numbers in the label files."""
    loaded = load_run(point_run)
    data = loaded.pipeline.data
    result = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    item_frame = result.geometry.to_input(result.targets).numpy()
    assert loaded.spec.augment.min_scale < 1 and not np.allclose(item_frame, result.targets.numpy(), atol=1e-2)
    for position, item in enumerate(result.indices.tolist()):
        path = data.items.paths[item]
        size = source_size(path)
        assert data.item_tfm is not None
        window = data.item_tfm.window(size, None)
        label = np.loadtxt(str(path).replace("_rgb.jpg", "_pts.txt")).reshape(-1, 2)
        assert item_to_source(item_frame[position], window, size) == pytest.approx(label, abs=1e-3)


def test_point_predictions_are_in_original_pixels(point_run: Path, tmp_path: Path) -> None:
    loaded = load_run(point_run)
    data = loaded.pipeline.data
    result = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    files = [data.items.paths[int(i)] for i in result.indices]
    out = tmp_path / "points.csv"
    assert run_cli("predict", str(point_run), *map(str, files), "--out", str(out), "--quiet") == 0
    frame = pd.read_csv(out)
    item_frame = result.geometry.to_input(as_points(result.outputs)).numpy()
    assert data.item_tfm is not None
    for position, row in frame.iterrows():
        size = source_size(files[int(position)])
        expected = item_to_source(item_frame[int(position)], data.item_tfm.window(size, None), size)
        assert [row["x_1"], row["y_1"]] == pytest.approx(expected[0].tolist(), abs=1e-3)
        assert (row["width"], row["height"]) == size


def test_regression_predictions_are_the_validation_values(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run = trained_run("regression", tmp_path_factory)
    files, result = _valid_files(run)
    out = tmp_path / "values.csv"
    assert run_cli("predict", str(run), *map(str, files), "--out", str(out), "--quiet") == 0
    frame = pd.read_csv(out)
    assert frame["value_1"].to_numpy() == pytest.approx(result.outputs[:, 0].numpy(), abs=1e-5)
