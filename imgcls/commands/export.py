"""`imgcls export`: write the inference folder (default RUN/export) and say how it was checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imgcls.errors import TrainingError
from imgcls.evaluate.export import ONNX_OPSET, ONNX_TOLERANCE, ExportResult, export_run
from imgcls.evaluate.load import load_run
from imgcls.evaluate.predict import resolve_threshold
from imgcls.report.console import Console
from imgcls.targets.base import threshold_text


@dataclass(frozen=True)
class ExportOptions:
    onnx: bool = True
    thresh: str | None = None  # '0.4', or 'label=0.3,...'; None: the run's
    # store the calibration `imgcls interpret` fitted for the checkpoint (default RUN/interpret/calibration.json)
    calibrate: bool = False
    calibration_file: Path | None = None


def run_export(
    run_dir: Path,
    which: str = "best",
    out: Path | None = None,
    options: ExportOptions | None = None,
    quiet: bool = False,
) -> ExportResult:
    options = options or ExportOptions()
    console = Console(quiet)
    loaded = load_run(run_dir, which, device="cpu")
    target = loaded.target
    decision = resolve_threshold(options.thresh, target, loaded.pipeline.decision)
    calibration = None
    if options.calibrate or options.calibration_file is not None:
        calibration = loaded.calibration_record(options.calibration_file)
    folder = out or run_dir / "export"
    result = export_run(loaded, folder, options.onnx, decision, calibration)
    console.info(f"exported {loaded.checkpoint.path} ({target.kind}, {target.n_out} outputs) to {folder}/")
    for file in result.files:
        console.info(f"  {file.name:<18} {file.stat().st_size / 1e6:8.2f} MB")
    if target.per_label_thresholds:
        console.info(f"  decision threshold {threshold_text(result.record.decision(), target.vocab)} (preprocess.json)")
    if calibration is not None:
        console.info(
            f"calibration: {calibration.calibration().describe()}, fitted on {calibration.n_items} validation items "
            f"(ECE {calibration.ece_before:.4f} -> {calibration.ece_after:.4f}); in preprocess.json"
            + (" and in model.onnx's graph" if options.onnx else "")
        )
    _onnx_check(console, result)
    console.info(f"predict with: imgcls predict {folder} IMAGES_OR_FOLDERS --out predictions.csv")
    return result


def _onnx_check(console: Console, result: ExportResult) -> None:
    difference = result.max_abs_diff
    if difference is None:
        return
    verdict = "ok" if difference <= ONNX_TOLERANCE else "TOO LARGE"
    onnx_record = result.record.onnx
    agree = onnx_record is not None and onnx_record.decisions_agree
    console.info(
        f"ONNX ({result.exporter} exporter, opset {ONNX_OPSET}) checked with onnxruntime on 3 random images: "
        f"max |onnx - torch| = {difference:.2e} (tolerance {ONNX_TOLERANCE:.0e}): {verdict}; "
        f"decisions {'the same' if agree else 'DIFFERENT'}"
    )
    if difference > ONNX_TOLERANCE:
        raise TrainingError(
            f"the ONNX model's outputs differ from PyTorch's by up to {difference:.3g}",
            hint="model.safetensors and preprocess.json are fine; use them, or report the architecture",
        )
