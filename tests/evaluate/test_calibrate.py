"""interpret fits a calibration on the validation logits; export --calibrate stores it in preprocess.json and the
ONNX graph; predict applies it, from the run and from the export, in torch and in onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from trained_runs import run_cli, trained_run

from imgcls.errors import ImgclsError
from imgcls.evaluate.load import load_run
from imgcls.evaluate.predict import load_predictor, predict_files
from imgcls.train.evaluation import evaluate


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run("category", tmp_path_factory)


@pytest.fixture(scope="module")
def interpreted(classification_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpret folder (outside the shared run folder) with its calibration.json."""
    out = tmp_path_factory.mktemp("calibrated") / "interpret"
    assert run_cli("interpret", str(classification_run), "--out", str(out), "--quiet") == 0
    return out


@pytest.fixture(scope="module")
def exported(classification_run: Path, interpreted: Path) -> Path:
    out = interpreted.parent / "export"
    calibration = str(interpreted / "calibration.json")
    assert run_cli("export", str(classification_run), "--out", str(out), "--calibration", calibration, "-q") == 0
    return out


def _validation(run: Path) -> tuple[list[Path], torch.Tensor, torch.Tensor]:
    """The validation files, their raw outputs and the images the model saw, in item order."""
    loaded = load_run(run)
    data = loaded.pipeline.data
    batches = loaded.pipeline.batches("valid")
    result = evaluate(loaded.model, batches, loaded.runtime)
    batches.set_epoch(0)
    images = torch.cat([b.images for b in batches])
    return [data.items.paths[int(i)] for i in result.indices], result.outputs, images


def test_interpret_writes_the_calibration_and_its_reliability_diagram(
    interpreted: Path, classification_run: Path
) -> None:
    record = json.loads((interpreted / "calibration.json").read_text())
    assert record["method"] == "temperature" and record["temperature"] > 0 and record["n_items"] == 10
    assert record["n_bins"] == 15 and record["checkpoint_kind"] == "best"
    assert record["nll_after"] <= record["nll_before"] + 1e-9  # the fit minimises this very NLL
    _, outputs, _ = _validation(classification_run)
    labels = load_run(classification_run).pipeline.data.targets.values
    valid = load_run(classification_run).pipeline.data.split.valid
    nll = torch.nn.functional.cross_entropy(outputs.double() / record["temperature"], torch.as_tensor(labels[valid]))
    assert float(nll) == pytest.approx(record["nll_after"], abs=1e-6)
    bins = pd.read_csv(interpreted / "calibration.csv")
    assert list(bins.columns) == ["calibrated", "bin", "lower", "upper", "count", "confidence", "accuracy", "gap"]
    assert len(bins) == 30 and int(bins[~bins["calibrated"]]["count"].sum()) == 10
    assert (interpreted / "reliability.png").stat().st_size > 10_000


def test_export_stores_the_temperature_and_onnx_gives_calibrated_logits(
    exported: Path, interpreted: Path, classification_run: Path
) -> None:
    import onnxruntime

    temperature = json.loads((interpreted / "calibration.json").read_text())["temperature"]
    config = json.loads((exported / "preprocess.json").read_text())
    assert config["calibration"]["temperature"] == temperature and config["calibration"]["method"] == "temperature"
    assert "calibrated" in config["output"]["values"]
    _, outputs, images = _validation(classification_run)
    session = onnxruntime.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_outputs,) = session.run(["outputs"], {"images": images.numpy()})
    assert onnx_outputs == pytest.approx((outputs / temperature).numpy(), abs=1e-4)
    onnx_probs = torch.softmax(torch.as_tensor(onnx_outputs), dim=1).numpy()
    assert onnx_probs == pytest.approx(torch.softmax(outputs / temperature, dim=1).numpy(), abs=1e-5)


def test_predict_applies_the_stored_temperature_from_the_export_and_the_run(
    exported: Path, interpreted: Path, classification_run: Path
) -> None:
    temperature = json.loads((interpreted / "calibration.json").read_text())["temperature"]
    files, outputs, _ = _validation(classification_run)
    expected = torch.softmax(outputs / temperature, dim=1).numpy()
    from_export = predict_files(load_predictor(exported), files)
    assert np.stack([p.values for p in from_export]) == pytest.approx(expected, abs=1e-5)
    calibrated_run = load_predictor(classification_run, calibration_file=interpreted / "calibration.json")
    from_run = predict_files(calibrated_run, files)
    assert np.stack([p.values for p in from_run]) == pytest.approx(expected, abs=1e-5)
    plain = predict_files(load_predictor(classification_run), files)
    assert np.stack([p.values for p in plain]) == pytest.approx(torch.softmax(outputs, dim=1).numpy(), abs=1e-5)


def test_min_confidence_makes_unsure_predictions_unknown(
    exported: Path, classification_run: Path, tmp_path: Path
) -> None:
    files, _, _ = _validation(classification_run)
    plain = tmp_path / "plain.csv"
    assert run_cli("predict", str(exported), *map(str, files), "--out", str(plain), "-q") == 0
    tops = pd.read_csv(plain)["prob_1"]
    cut = float(tops.median())
    out = tmp_path / "p.csv"
    assert run_cli("predict", str(exported), *map(str, files), "--out", str(out), "--min-confidence", f"{cut}") == 0
    frame = pd.read_csv(out)
    assert list(frame.columns[:3]) == ["file", "error", "label"]
    unsure = frame["prob_1"] < cut
    assert (frame.loc[unsure, "label"] == "unknown").all() and unsure.any()
    assert (frame.loc[~unsure, "label"] == frame.loc[~unsure, "pred_1"]).all()


def test_a_calibration_of_another_checkpoint_is_refused(
    interpreted: Path, classification_run: Path, tmp_path: Path
) -> None:
    record = json.loads((interpreted / "calibration.json").read_text())
    record["checkpoint_written"] = "2000-01-01T00:00:00+00:00"
    stale = tmp_path / "calibration.json"
    stale.write_text(json.dumps(record))
    with pytest.raises(ImgclsError, match="was fitted for") as caught:
        load_predictor(classification_run, calibration_file=stale)
    assert caught.value.hint is not None and "imgcls interpret" in caught.value.hint
    with pytest.raises(ImgclsError, match="no calibration at"):
        load_predictor(classification_run, calibration_file=tmp_path / "missing.json")


def test_an_export_without_calibration_cannot_predict_calibrated(
    classification_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plain-export"
    assert run_cli("export", str(classification_run), "--out", str(out), "--no-onnx", "-q") == 0
    assert "calibration" not in json.loads((out / "preprocess.json").read_text())
    code = run_cli("predict", str(out), str(tmp_path), "--calibrate", "--out", str(tmp_path / "p.csv"))
    assert code == 1 and "exported without a calibration" in capsys.readouterr().err


def test_multilabel_platt_scaling_through_export_and_predict(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run = trained_run("multi_category", tmp_path_factory)
    interpret = tmp_path / "interpret"
    assert run_cli("interpret", str(run), "--out", str(interpret), "-q") == 0
    record = json.loads((interpret / "calibration.json").read_text())
    assert record["method"] == "platt" and len(record["a"]) == len(record["b"]) == 4
    assert all(a > 0 for a in record["a"]) and (interpret / "reliability.png").is_file()
    export = tmp_path / "export"
    calibration = str(interpret / "calibration.json")
    assert run_cli("export", str(run), "--out", str(export), "--calibration", calibration, "--no-onnx", "-q") == 0
    files, outputs, _ = _validation(run)
    a, b = torch.tensor(record["a"]), torch.tensor(record["b"])
    values = np.stack([p.values for p in predict_files(load_predictor(export), files)])
    assert values == pytest.approx(torch.sigmoid(a * outputs + b).numpy(), abs=1e-5)


def test_point_runs_are_not_calibrated(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = trained_run("point", tmp_path_factory)
    assert run_cli("interpret", str(run), "--out", str(tmp_path / "i"), "-q") == 0
    assert not (tmp_path / "i" / "calibration.json").exists()
    assert run_cli("export", str(run), "--out", str(tmp_path / "e"), "--calibrate", "--no-onnx") == 1
    assert "calibration needs a classifier" in capsys.readouterr().err
    code = run_cli("predict", str(run), str(tmp_path), "--min-confidence", "0.5", "--out", str(tmp_path / "p.csv"))
    assert code == 1 and "--min-confidence needs a classifier" in capsys.readouterr().err
