"""`imgcls export`: a self-contained inference folder, with no pickled code anywhere.

    model.safetensors   the weights (a plain state dict)
    preprocess.json     everything else, declaratively (imgcls.train.record.ExportRecord, derived from the run
                        record): the target (kind, vocab, points, threshold), how to rebuild the model (arch, head,
                        y_range), the item transform, the final size, the normalization
    model.onnx          the same network for onnxruntime and other runtimes; input `images` (N, C, H, W) float32,
                        normalized as preprocess.json says; output `outputs` (N, n_out), raw (before activation);
                        with a calibration (export --calibrate) the raw outputs are the calibrated logits

`imgcls predict EXPORT_FOLDER images/` rebuilds the model from the first two files, without the spec or the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from imgcls.augment.pipeline import Normalizer
from imgcls.errors import ImgclsError, TrainingError
from imgcls.evaluate.load import LoadedRun
from imgcls.evaluate.predict import PREPROCESS, WEIGHTS
from imgcls.targets import Target
from imgcls.targets.base import Threshold
from imgcls.targets.calibration import Calibration
from imgcls.train.record import EXPORT_FORMAT, EXPORT_VERSION, CalibrationRecord, ExportRecord, OnnxRecord

ONNX = "model.onnx"
ONNX_TOLERANCE = 1e-4  # max |onnxruntime - torch| on fp32 outputs
ONNX_OPSET = 18


# --- ONNX ---------------------------------------------------------------------------------------------------


class CalibratedModel(nn.Module):
    """A model whose raw outputs go through its calibration's affine map (outputs * scale + bias, as
    Calibration.apply computes it): what model.onnx holds under export --calibrate."""

    scale: torch.Tensor
    bias: torch.Tensor

    def __init__(self, model: nn.Module, calibration: Calibration) -> None:
        super().__init__()
        self.model = model
        scale, bias = calibration.affine()
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outputs: torch.Tensor = self.model(images)
        return outputs.float() * self.scale + self.bias


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ImgclsError(
            "exporting to ONNX needs the onnx, onnxscript and onnxruntime packages",
            hint="pip install 'imgcls[onnx]', or pass --no-onnx to export the weights and preprocess.json only",
        ) from None
    return onnx, onnxruntime


def example_images(shape: tuple[int, ...], normalizer: Normalizer | None = None, seed: int = 0) -> torch.Tensor:
    """Random images as the model receives them: uniform pixels in [0, 1], normalized as the run normalizes."""
    images = torch.rand(*shape, generator=torch.Generator().manual_seed(seed))
    return normalizer(images) if normalizer is not None else images


def export_onnx(model: nn.Module, path: Path, input_shape: tuple[int, ...], dynamic_size: bool = False) -> str:
    """Write `model` (CPU, fp32, eval) to `path` with a dynamic batch axis; returns the exporter used (torch's
    dynamo-based exporter, or the TorchScript one where the first fails)."""
    import warnings

    example = example_images((2, *input_shape[1:]))
    common: dict[str, Any] = {
        "input_names": ["images"],
        "output_names": ["outputs"],
        "opset_version": ONNX_OPSET,
    }
    dims: dict[int, Any] = {0: torch.export.Dim("batch")}
    axes = {"images": {0: "batch"}, "outputs": {0: "batch"}}
    if dynamic_size:
        dims.update({2: torch.export.Dim("height"), 3: torch.export.Dim("width")})
        axes["images"].update({2: "height", 3: "width"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamic_shapes=(dims,),
                dynamo=True,
                external_data=False,
                verbose=False,
                **common,
            )
            return "dynamo"
        except Exception:  # noqa: BLE001 - any failure of the new exporter: try the TorchScript one
            torch.onnx.export(model, (example,), str(path), dynamic_axes=axes, dynamo=False, **common)
            return "torchscript"


def onnx_outputs(
    model: nn.Module, path: Path, input_shape: tuple[int, ...], normalizer: Normalizer | None = None, batch: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's and PyTorch's raw outputs on a random batch of images (a batch size the export did not see),
    normalized as the run's images are."""
    onnx, onnxruntime = _onnx_modules()
    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = example_images((batch, *input_shape[1:]), normalizer, seed=1)
    (actual,) = session.run(["outputs"], {"images": images.numpy()})
    with torch.inference_mode():
        expected = model(images).float().numpy()
    if actual.shape != expected.shape:
        raise TrainingError(f"the ONNX model gives outputs of shape {actual.shape}, PyTorch {expected.shape}")
    return np.asarray(actual), expected


def same_decisions(target: Target, actual: np.ndarray, expected: np.ndarray, thresh: Threshold) -> bool:
    """Whether two sets of raw outputs give the same decisions (classes, labels at `thresh`, or values within
    the ONNX tolerance)."""
    decide = [target.decide(target.activation(torch.as_tensor(o)).numpy(), thresh) for o in (actual, expected)]
    if decide[0].dtype.kind in "iub":
        return bool(np.array_equal(decide[0], decide[1]))
    return bool(np.allclose(decide[0], decide[1], atol=ONNX_TOLERANCE))


# --- the export -----------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    folder: Path
    files: list[Path]
    record: ExportRecord
    exporter: str | None
    max_abs_diff: float | None


def export_run(
    loaded: LoadedRun,
    folder: Path,
    onnx: bool = True,
    thresh: Threshold | None = None,
    calibration: CalibrationRecord | None = None,
) -> ExportResult:
    """Write model.safetensors, preprocess.json and (unless onnx=False) a model.onnx checked with onnxruntime into
    `folder`. `thresh` replaces the run's decision threshold (its saved per-label ones, else the spec's). A
    `calibration` goes into preprocess.json and into model.onnx's graph; model.safetensors keeps the plain weights.
    A stale model.onnx of an earlier export is removed when onnx=False."""
    if onnx:
        _onnx_modules()  # fail before any work when the packages are missing
    folder.mkdir(parents=True, exist_ok=True)
    model = loaded.model.float().eval()
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": EXPORT_FORMAT, "format_version": str(EXPORT_VERSION)})
    target = loaded.target
    decision = loaded.pipeline.decision if thresh is None else thresh
    record = ExportRecord.from_run(
        loaded.checkpoint.record, loaded.spec, decision, target.activation_name, str(loaded.run_dir)
    )
    if calibration is not None:
        record = record.calibrated(calibration)
        model = CalibratedModel(model, calibration.calibration()).eval()
    files = [folder / WEIGHTS, folder / PREPROCESS]
    exporter, difference = None, None
    if not onnx:
        (folder / ONNX).unlink(missing_ok=True)  # a model.onnx of an earlier export would not match
    else:
        size = loaded.size or (224, 224)
        shape = (1, loaded.spec.model.n_in, *size)
        exporter = export_onnx(model, folder / ONNX, shape, dynamic_size=loaded.size is None)
        actual, expected = onnx_outputs(model, folder / ONNX, shape, loaded.pipeline.normalizer)
        difference = float(abs(actual - expected).max())
        checked = OnnxRecord(
            file=ONNX,
            exporter=exporter,
            opset=ONNX_OPSET,
            max_abs_diff=difference,
            tolerance=ONNX_TOLERANCE,
            decisions_agree=same_decisions(target, actual, expected, decision),
        )
        record = record.model_copy(update={"onnx": checked})
        files.append(folder / ONNX)
    (folder / PREPROCESS).write_text(record.to_json())
    return ExportResult(folder, files, record, exporter, difference)


__all__ = [
    "ONNX_TOLERANCE",
    "CalibratedModel",
    "ExportResult",
    "export_onnx",
    "export_run",
    "onnx_outputs",
    "same_decisions",
]
