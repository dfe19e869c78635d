"""export: weights + declarative preprocessing + an ONNX model that agrees with PyTorch; predict from the export
folder alone gives the run's predictions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from trained_runs import run_cli, trained_run

from imgcls.commands.export import ExportOptions, run_export
from imgcls.errors import ImgclsError
from imgcls.evaluate.export import ONNX_TOLERANCE, ExportResult
from imgcls.evaluate.load import load_run
from imgcls.evaluate.predict import load_predictor, predict_files


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run("category", tmp_path_factory)


@pytest.fixture(scope="module")
def exported(classification_run: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    return run_export(classification_run, out=tmp_path_factory.mktemp("export") / "tiny", quiet=True)


def test_export_writes_three_files_and_no_pickle(exported: ExportResult, classification_run: Path) -> None:
    folder = exported.folder
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.safetensors", "preprocess.json"]
    loaded = load_run(classification_run)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())  # noqa: SIM118 - not a dict
    assert keys == set(loaded.model.state_dict())
    config = json.loads((folder / "preprocess.json").read_text())
    assert config["format"] == "imgcls-export" and config["format_version"] == 1
    assert config["target"] == {"kind": "category", "n_out": 5, "vocab": list(loaded.target.vocab), "n_points": 0}
    assert config["model"]["arch"] == "xresnet_tiny" and config["model"]["head"]["lin_ftrs"] == []
    assert config["item_transform"] == {"kind": "resize", "size": [40, 40], "method": "crop", "pad_mode": "reflection"}
    assert config["batch_resize"]["size"] == [32, 32] and config["normalize"] is None
    assert config["activation"] == "softmax"
    assert config["onnx"]["max_abs_diff"] == exported.max_abs_diff <= ONNX_TOLERANCE
    assert not any(folder.glob("*.pkl")) and not any(folder.glob("*.pt*"))


@pytest.mark.parametrize("batch", [1, 10])
def test_onnx_outputs_equal_pytorchs_on_validation_images(
    exported: ExportResult, classification_run: Path, batch: int
) -> None:
    import onnxruntime

    loaded = load_run(classification_run)
    loader = loaded.pipeline.batches("valid")
    loader.set_epoch(0)
    images = torch.cat([b.images for b in loader])[:batch]
    session = onnxruntime.InferenceSession(str(exported.folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (actual,) = session.run(["outputs"], {"images": images.numpy()})
    with torch.inference_mode():
        expected = loaded.model(images).numpy()
    assert actual.shape == (batch, 5)
    assert float(np.abs(actual - expected).max()) <= ONNX_TOLERANCE


def test_predict_from_the_export_folder_alone(
    exported: ExportResult, classification_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_run(classification_run)
    data = loaded.pipeline.data
    files = [data.items.paths[int(i)] for i in data.split.valid]
    from_run = predict_files(load_predictor(classification_run), files)
    moved = Path(shutil.copytree(exported.folder, tmp_path / "elsewhere"))

    def unavailable(*args: object, **kwargs: object) -> None:
        raise AssertionError("predict from an export must not read the run or its data")

    monkeypatch.setattr("imgcls.evaluate.predict.load_run", unavailable)
    monkeypatch.setattr("imgcls.data.datablock.build_data", unavailable)
    from_export = predict_files(load_predictor(moved), files)
    assert np.stack([p.values for p in from_export]) == pytest.approx(np.stack([p.values for p in from_run]), abs=1e-5)
    out = tmp_path / "p.csv"
    assert run_cli("predict", str(moved), *map(str, files[:3]), "--out", str(out), "--quiet") == 0
    assert len(pd.read_csv(out)) == 3


def test_export_command_without_onnx_for_a_point_model(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = trained_run("point", tmp_path_factory)
    out = tmp_path / "points-export"
    assert run_cli("export", str(run), "--out", str(out), "--no-onnx") == 0
    assert "predict with: imgcls predict" in capsys.readouterr().out
    assert not (out / "model.onnx").exists()
    config = json.loads((out / "preprocess.json").read_text())
    assert config["model"]["y_range"] == [-1.0, 1.0] and config["target"]["n_points"] == 1
    assert config["item_transform"]["method"] == "pad" and config["batch_resize"]["min_scale"] == 0.8
    loaded = load_run(run)
    data = loaded.pipeline.data
    files = [data.items.paths[int(i)] for i in data.split.valid]
    from_run = predict_files(load_predictor(run), files)
    from_export = predict_files(load_predictor(out), files)
    for a, b in zip(from_run, from_export, strict=True):
        assert a.points == pytest.approx(b.points, abs=1e-4)


def test_a_folder_that_is_neither_a_run_nor_an_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("predict", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "p.csv")) == 1
    assert "neither a run folder" in capsys.readouterr().err


def test_a_newer_export_format_is_refused(exported: ExportResult, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(exported.folder, tmp_path / "future"))
    config = json.loads((folder / "preprocess.json").read_text())
    config["format_version"] = 99
    (folder / "preprocess.json").write_text(json.dumps(config))
    with pytest.raises(ImgclsError, match="export the run again"):
        load_predictor(folder)


def test_exporting_again_without_onnx_removes_the_old_onnx_model(exported: ExportResult, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(exported.folder, tmp_path / "again"))
    run = Path(json.loads((folder / "preprocess.json").read_text())["source"]["run"])
    run_export(run, out=folder, options=ExportOptions(onnx=False), quiet=True)
    assert not (folder / "model.onnx").exists()
    assert "onnx" not in json.loads((folder / "preprocess.json").read_text())


def test_per_label_thresholds_travel_into_preprocess_json_predict_and_onnx(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export --thresh label=value: preprocess.json holds one threshold per label; predict from the export and an
    ONNX consumer that applies them (sigmoid, then > threshold) make the same, changed, decision."""
    import onnxruntime

    run = trained_run("multi_category", tmp_path_factory)
    loaded = load_run(run)
    vocab = list(loaded.target.vocab)
    loader = loaded.pipeline.batches("valid")
    loader.set_epoch(0)
    images = torch.cat([b.images for b in loader])
    with torch.inference_mode():
        probs = torch.sigmoid(loaded.model(images)).numpy()
    label = int(np.abs(probs[0] - 0.4).argmin())  # the first image's least certain label, cut on its other side
    cut = round(float(probs[0, label]) + (0.005 if probs[0, label] > 0.4 else -0.005), 4)
    out = tmp_path / "export"
    assert run_cli("export", str(run), "--out", str(out), "--thresh", f"{vocab[label]}={cut}") == 0
    printed = capsys.readouterr().out
    assert f"{vocab[label]} {cut:.3g}" in printed and "decisions the same" in printed
    config = json.loads((out / "preprocess.json").read_text())
    expected = [0.4] * len(vocab)
    expected[label] = cut
    assert config["threshold"] == pytest.approx(expected) and config["onnx"]["decisions_agree"] is True
    assert config["tta_augment"]["max_rotate"] == 10.0  # the training transform, for predict --tta
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (raw,) = session.run(["outputs"], {"images": images.numpy()})
    onnx_labels = 1 / (1 + np.exp(-raw)) > np.array(config["threshold"])
    assert bool(onnx_labels[0, label]) != bool(probs[0, label] > 0.4)  # the per-label threshold flipped it
    files = [loaded.pipeline.data.items.paths[int(i)] for i in loaded.pipeline.data.split.valid]
    predicted = tmp_path / "p.csv"
    assert run_cli("predict", str(out), *map(str, files), "--out", str(predicted), "--quiet") == 0
    labels = pd.read_csv(predicted, keep_default_na=False)["labels"].tolist()
    assert labels == [" ".join(v for v, on in zip(vocab, row, strict=True) if on) for row in onnx_labels]


def test_predict_tta_from_an_export_equals_the_run(
    exported: ExportResult, classification_run: Path, tmp_path: Path
) -> None:
    from imgcls.evaluate.predict import FileTTA

    data = load_run(classification_run).pipeline.data
    files = [data.items.paths[int(i)] for i in data.split.valid]
    from_run = predict_files(load_predictor(classification_run), files, tta=FileTTA(n=2))
    from_export = predict_files(load_predictor(exported.folder), files, tta=FileTTA(n=2))
    assert np.stack([p.values for p in from_export]) == pytest.approx(np.stack([p.values for p in from_run]), abs=1e-5)
    older = Path(shutil.copytree(exported.folder, tmp_path / "older"))
    config = json.loads((older / "preprocess.json").read_text())
    del config["tta_augment"]  # an export written before predict --tta existed
    (older / "preprocess.json").write_text(json.dumps(config))
    assert predict_files(load_predictor(older), files[:1])[0].values is not None  # still readable
    with pytest.raises(ImgclsError, match="does not record the training transforms"):
        predict_files(load_predictor(older), files[:1], tta=FileTTA(n=2))


def test_a_trimmed_model_exported_at_a_small_size_holds_at_every_size(tmp_path: Path) -> None:
    # At 4x4 the second and third convs see 2x2 and 1x1 maps, where TrimmedConv2d drops taps; the dynamic-size graph
    # must still be the full convolution (at 16x16 every tap meets data).
    import onnxruntime

    from imgcls.evaluate.export import export_onnx
    from imgcls.models.trim import trim_padding_taps

    torch.manual_seed(0)
    conv = torch.nn.Conv2d
    model = torch.nn.Sequential(
        conv(3, 8, 3, 2, 1), torch.nn.ReLU(), conv(8, 8, 3, 2, 1), conv(8, 8, 3, 1, 1), torch.nn.Flatten(1)
    )
    trim_padding_taps(model).eval()
    export_onnx(model, tmp_path / "model.onnx", (1, 3, 4, 4), dynamic_size=True)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for size in (4, 3, 16):
        images = torch.rand(2, 3, size, size)
        (actual,) = session.run(["outputs"], {"images": images.numpy()})
        with torch.inference_mode():
            expected = model(images).numpy()
        np.testing.assert_allclose(actual, expected, atol=1e-5)
