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


def test_per_label_thresholds_from_the_command_line(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--thresh label=value changes that label's decisions only; the others keep the run's 0.4."""
    run = trained_run("multi_category", tmp_path_factory)
    files, result = _valid_files(run)
    vocab = list(load_run(run).target.vocab)
    probs = torch.sigmoid(result.outputs).numpy()
    # the label whose probability on the first image is nearest 0.4, cut just on its other side
    label = int(np.abs(probs[0] - 0.4).argmin())
    cut = float(probs[0, label]) + (0.01 if probs[0, label] > 0.4 else -0.01)
    out = tmp_path / "p.csv"
    assert run_cli("predict", str(run), *map(str, files), "--out", str(out), "--thresh", f"{vocab[label]}={cut}") == 0
    assert f"threshold {vocab[0]} " in capsys.readouterr().out
    cuts = np.full(len(vocab), 0.4)
    cuts[label] = cut
    expected = [" ".join(v for v, p, c in zip(vocab, row, cuts, strict=True) if p > c) for row in probs]
    labels = pd.read_csv(out, keep_default_na=False)["labels"].tolist()
    assert labels == expected
    assert (vocab[label] in labels[0].split()) != bool(probs[0, label] > 0.4)  # the first image's label flipped
    assert run_cli("predict", str(run), str(files[0]), "--out", str(out), "--thresh", "squre=0.2") == 2
    assert "unknown label 'squre' (did you mean 'square'?)" in capsys.readouterr().err
    assert run_cli("predict", str(run), str(files[0]), "--out", str(out), "--thresh", "circle=2") == 2
    category = trained_run("category", tmp_path_factory)
    assert run_cli("predict", str(category), str(files[0]), "--out", str(out), "--thresh", "ring=0.3") == 1
    assert "per-label thresholds are for multi-label models" in capsys.readouterr().err


def test_predict_tta_blends_augmented_passes_over_the_files(
    classification_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """learn.tta(dl=test_dl): 0.75 * mean of n augmented passes (training batch transform, validation items)
    + 0.25 * the plain pass; the plain pass alone with --beta 1."""
    from imgcls.evaluate.predict import FileTTA

    files, _ = _valid_files(classification_run)
    predictor = load_predictor(classification_run)
    plain = np.stack([p.values for p in predict_files(predictor, files, bs=4)])
    blended = np.stack([p.values for p in predict_files(predictor, files, bs=4, tta=FileTTA(n=2))])
    passes = []
    for number in (1, 2):
        result = evaluate(predictor.model, predictor.batches(files, 4, augmented=number), predictor.runtime)
        passes.append(torch.softmax(result.outputs, dim=-1).numpy())
    assert not np.allclose(passes[0], plain, atol=1e-4) and not np.allclose(passes[0], passes[1], atol=1e-4)
    assert blended == pytest.approx(0.75 * (passes[0] + passes[1]) / 2 + 0.25 * plain, abs=1e-5)
    again = np.stack([p.values for p in predict_files(predictor, files, bs=4, tta=FileTTA(n=2))])
    assert np.array_equal(again, blended)  # each pass has its own fixed seed
    only_plain = predict_files(predictor, files, bs=4, tta=FileTTA(n=1, beta=1.0))
    assert np.stack([p.values for p in only_plain]) == pytest.approx(plain, abs=1e-6)
    out = tmp_path / "tta.csv"
    args = ("--out", str(out), "--tta", "-n", "2", "--bs", "4")  # the draws of a pass depend on its batches
    assert run_cli("predict", str(classification_run), *map(str, files), *args) == 0
    assert "TTA: 2 augmented pass(es)" in capsys.readouterr().out
    frame = pd.read_csv(out)
    vocab = load_run(classification_run).target.vocab
    assert frame["pred_1"].tolist() == [vocab[int(row.argmax())] for row in blended]
    assert frame["prob_1"].to_numpy() == pytest.approx(blended.max(axis=1), abs=1e-5)


def test_predict_tta_of_points_maps_every_pass_back_to_the_plain_frame(point_run: Path) -> None:
    """With a batch transform that moves nothing (and no crop, plain or random), every augmented view is the
    plain one: after the frame changes the blend must equal the plain prediction; with the run's own training
    transform (flips, rotations, random crops) it moves."""
    from dataclasses import replace

    from imgcls.evaluate.predict import FileTTA

    files, _ = _valid_files(point_run)
    predictor = load_predictor(point_run)
    assert predictor.tta_augment is not None
    plain = predict_files(predictor, files, bs=2)
    augmented = predict_files(predictor, files, bs=2, tta=FileTTA(n=2))
    still = predictor.tta_augment.spec.model_copy(
        update={
            "do_flip": False,
            "max_rotate": 0.0,
            "max_zoom": 1.0,
            "max_warp": 0.0,
            "max_lighting": 0.0,
            "min_scale": 1.0,
        }
    )
    predictor.tta_augment = replace(predictor.tta_augment, spec=still)
    predictor.augment = replace(predictor.augment, spec=predictor.augment.spec.model_copy(update={"min_scale": 1.0}))
    uncropped = predict_files(predictor, files, bs=2)
    unmoved = predict_files(predictor, files, bs=2, tta=FileTTA(n=2))
    for a, b, c in zip(uncropped, unmoved, augmented, strict=True):
        assert b.points == pytest.approx(a.points, abs=0.05)  # pixels of the original file
        assert a.size == c.size
    assert not np.allclose(np.stack([p.points for p in plain]), np.stack([p.points for p in augmented]), atol=1e-3)
