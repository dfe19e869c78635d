"""`imgcls export`: write the inference folder (default RUN/export) and say how it was checked."""

from __future__ import annotations

from pathlib import Path

from imgcls.errors import TrainingError
from imgcls.evaluate.export import ONNX_OPSET, ONNX_TOLERANCE, ExportResult, export_run
from imgcls.evaluate.load import load_run
from imgcls.evaluate.predict import resolve_threshold
from imgcls.report.console import Console
from imgcls.targets.base import threshold_text


def run_export(
    run_dir: Path,
    which: str = "best",
    out: Path | None = None,
    onnx: bool = True,
    quiet: bool = False,
    thresh: str | None = None,
) -> ExportResult:
    console = Console(quiet)
    loaded = load_run(run_dir, which, device="cpu")
    target = loaded.target
    decision = resolve_threshold(thresh, target, loaded.pipeline.decision)
    folder = out or run_dir / "export"
    result = export_run(loaded, folder, onnx, decision)
    console.info(f"exported {loaded.checkpoint.path} ({target.kind}, {target.n_out} outputs) to {folder}/")
    for file in result.files:
        console.info(f"  {file.name:<18} {file.stat().st_size / 1e6:8.2f} MB")
    if target.per_label_thresholds:
        console.info(f"  decision threshold {threshold_text(result.record.decision(), target.vocab)} (preprocess.json)")
    difference = result.max_abs_diff
    if difference is not None:
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
    console.info(f"predict with: imgcls predict {folder} IMAGES_OR_FOLDERS --out predictions.csv")
    return result
