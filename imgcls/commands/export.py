"""`imgcls export`: write the inference folder (default RUN/export) and say how it was checked."""

from __future__ import annotations

from pathlib import Path

from imgcls.errors import TrainingError
from imgcls.evaluate.export import ONNX_OPSET, ONNX_TOLERANCE, ExportResult, export_run
from imgcls.evaluate.load import load_run
from imgcls.report.console import Console


def run_export(
    run_dir: Path,
    which: str = "best",
    out: Path | None = None,
    onnx: bool = True,
    quiet: bool = False,
    calibrate: bool = False,
    calibration_file: Path | None = None,
) -> ExportResult:
    """`calibrate` (or a `calibration_file`) stores the calibration `imgcls interpret` fitted for the checkpoint
    (default RUN/interpret/calibration.json)."""
    console = Console(quiet)
    loaded = load_run(run_dir, which, device="cpu")
    folder = out or run_dir / "export"
    calibration = None
    if calibrate or calibration_file is not None:
        calibration = loaded.calibration_record(calibration_file)
    result = export_run(loaded, folder, onnx, calibration)
    target = loaded.target
    console.info(f"exported {loaded.checkpoint.path} ({target.kind}, {target.n_out} outputs) to {folder}/")
    for file in result.files:
        console.info(f"  {file.name:<18} {file.stat().st_size / 1e6:8.2f} MB")
    if calibration is not None:
        console.info(
            f"calibration: {calibration.calibration().describe()}, fitted on {calibration.n_items} validation items "
            f"(ECE {calibration.ece_before:.4f} -> {calibration.ece_after:.4f}); in preprocess.json"
            + (" and in model.onnx's graph" if onnx else "")
        )
    difference = result.max_abs_diff
    if difference is not None:
        verdict = "ok" if difference <= ONNX_TOLERANCE else "TOO LARGE"
        console.info(
            f"ONNX ({result.exporter} exporter, opset {ONNX_OPSET}) checked with onnxruntime on 3 random images: "
            f"max |onnx - torch| = {difference:.2e} (tolerance {ONNX_TOLERANCE:.0e}): {verdict}"
        )
        if difference > ONNX_TOLERANCE:
            raise TrainingError(
                f"the ONNX model's outputs differ from PyTorch's by up to {difference:.3g}",
                hint="model.safetensors and preprocess.json are fine; use them, or report the architecture",
            )
    console.info(f"predict with: imgcls predict {folder} IMAGES_OR_FOLDERS --out predictions.csv")
    return result
