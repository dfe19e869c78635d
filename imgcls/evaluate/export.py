"""`imgcls export`: a self-contained inference folder, with no pickled code anywhere.

    model.safetensors   the weights (a plain state dict)
    preprocess.json     everything else, declaratively: the target (kind, vocab, points, threshold), how to rebuild
                        the model (arch, head, y_range), the item transform, the final size, the normalization
    model.onnx          the same network for onnxruntime and other runtimes; input `images` (N, 3, H, W) float32,
                        normalized as preprocess.json says; output `outputs` (N, n_out), raw (before activation)

`imgcls predict EXPORT_FOLDER images/` rebuilds the model from the first two files, without the spec or the data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from imgcls import __version__
from imgcls.augment.pipeline import BatchAugment, Normalizer
from imgcls.data.blocks import TargetInfo
from imgcls.data.item_tfms import build_item_transform
from imgcls.errors import ImgclsError, TrainingError
from imgcls.evaluate.infer import Predictor
from imgcls.evaluate.load import LoadedRun, load_run
from imgcls.models.factory import create_model
from imgcls.report.console import Console
from imgcls.spec.data import AugmentSpec, ItemTfm
from imgcls.spec.train import ModelSpec, RuntimeSpec
from imgcls.train.losses import Loss
from imgcls.train.runtime import resolve_runtime

FORMAT = "imgcls-export"
FORMAT_VERSION = 1
PREPROCESS, WEIGHTS, ONNX = "preprocess.json", "model.safetensors", "model.onnx"
ONNX_TOLERANCE = 1e-4  # max |onnxruntime - torch| on fp32 outputs
ONNX_OPSET = 18
_ACTIVATIONS = {"cross_entropy": "softmax", "label_smoothing_cross_entropy": "softmax", "bce_with_logits": "sigmoid"}


def preprocess_config(loaded: LoadedRun, which: str) -> dict[str, Any]:
    """The declarative description of a run's model and its validation-time preprocessing."""
    spec, info = loaded.spec, loaded.info
    size: list[int] | None = list(loaded.size) if loaded.size is not None else None
    spatial: list[int | str] = list(size) if size is not None else ["height", "width"]
    shape: list[int | str] = ["batch", spec.model.n_in, *spatial]
    normalizer = loaded.normalizer
    model = spec.model.model_dump(mode="json", include={"arch", "n_in", "y_range", "head", "kwargs"})
    metrics = loaded.checkpoint.meta.get("metrics", {})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "imgcls_version": __version__,
        "target": info.to_dict(),
        "threshold": loaded.thresh,
        "loss": loaded.loss.name,
        "activation": _ACTIVATIONS.get(loaded.loss.name, "identity"),
        "model": model,
        "item_transform": spec.data.item_tfm.model_dump(mode="json") if spec.data.item_tfm is not None else None,
        "batch_resize": {
            "size": size,
            "min_scale": spec.augment.min_scale,
            "pad_mode": spec.augment.pad_mode,
            "flip_vert": spec.augment.flip_vert,
        },
        "normalize": None if normalizer is None else {"mean": list(normalizer.mean), "std": list(normalizer.std)},
        "input": {
            "name": "images",
            "shape": shape,
            "dtype": "float32",
            "pixels": "RGB / 255, then (x - mean) / std per channel when normalize is set",
        },
        "output": {"name": "outputs", "shape": ["batch", info.n_out], "values": "raw; apply `activation`"},
        "source": {
            "run": str(loaded.run_dir),
            "checkpoint": which,
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        },
    }


# --- ONNX ---------------------------------------------------------------------------------------------------


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


def onnx_difference(
    model: nn.Module, path: Path, input_shape: tuple[int, ...], normalizer: Normalizer | None = None, batch: int = 3
) -> float:
    """max |onnxruntime - torch| over the outputs of a random batch of images (a batch size the export did not
    see), normalized as the run's images are."""
    onnx, onnxruntime = _onnx_modules()
    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = example_images((batch, *input_shape[1:]), normalizer, seed=1)
    (actual,) = session.run(["outputs"], {"images": images.numpy()})
    with torch.inference_mode():
        expected = model(images).float().numpy()
    if actual.shape != expected.shape:
        raise TrainingError(f"the ONNX model gives outputs of shape {actual.shape}, PyTorch {expected.shape}")
    return float(abs(actual - expected).max())


# --- the command ----------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    folder: Path
    files: list[Path]
    exporter: str | None
    max_abs_diff: float | None


def export_run(
    run_dir: Path, which: str = "best", out: Path | None = None, onnx: bool = True, quiet: bool = False
) -> ExportResult:
    """`imgcls export`: write model.safetensors, preprocess.json and (unless onnx=False) a checked model.onnx."""
    console = Console(quiet)
    if onnx:
        _onnx_modules()  # fail before any work when the packages are missing
    loaded = load_run(run_dir, which, device="cpu")
    folder = out or run_dir / "export"
    folder.mkdir(parents=True, exist_ok=True)
    model = loaded.model.float().eval()
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    config = preprocess_config(loaded, which)
    files = [folder / WEIGHTS]
    exporter, difference = None, None
    if not onnx:
        (folder / ONNX).unlink(missing_ok=True)  # a model.onnx of an earlier export would not match
    if onnx:
        size = loaded.size or (224, 224)
        shape = (1, loaded.spec.model.n_in, *size)
        exporter = export_onnx(model, folder / ONNX, shape, dynamic_size=loaded.size is None)
        difference = onnx_difference(model, folder / ONNX, shape, loaded.normalizer)
        config["onnx"] = {
            "file": ONNX,
            "exporter": exporter,
            "opset": ONNX_OPSET,
            "max_abs_diff": difference,
            "tolerance": ONNX_TOLERANCE,
        }
        files.append(folder / ONNX)
    (folder / PREPROCESS).write_text(json.dumps(config, indent=2) + "\n")
    files.insert(1, folder / PREPROCESS)
    console.info(f"exported {loaded.checkpoint.path} ({loaded.info.kind}, {loaded.info.n_out} outputs) to {folder}/")
    for file in files:
        console.info(f"  {file.name:<18} {file.stat().st_size / 1e6:8.2f} MB")
    if difference is not None:
        verdict = "ok" if difference <= ONNX_TOLERANCE else "TOO LARGE"
        console.info(
            f"ONNX ({exporter} exporter, opset {ONNX_OPSET}) checked with onnxruntime on 3 random images: "
            f"max |onnx - torch| = {difference:.2e} (tolerance {ONNX_TOLERANCE:.0e}): {verdict}"
        )
        if difference > ONNX_TOLERANCE:
            raise TrainingError(
                f"the ONNX model's outputs differ from PyTorch's by up to {difference:.3g}",
                hint="model.safetensors and preprocess.json are fine; use them, or report the architecture",
            )
    console.info(f"predict with: imgcls predict {folder} IMAGES_OR_FOLDERS --out predictions.csv")
    return ExportResult(folder, files, exporter, difference)


# --- reading it back ------------------------------------------------------------------------------------------


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((folder / PREPROCESS).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ImgclsError(f"cannot read {folder / PREPROCESS}: {err}") from None
    if config.get("format") != FORMAT or int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ImgclsError(
            f"{folder / PREPROCESS} is not an imgcls export this version reads "
            f"(format {config.get('format')!r} version {config.get('format_version')!r})",
            hint="export the run again with this imgcls",
        )
    return config


def predictor_from_export(folder: Path, device: str = "auto") -> Predictor:
    """Rebuild the model from preprocess.json and model.safetensors; nothing of the training run is needed."""
    config = _read_config(folder)
    info = TargetInfo.from_dict(config["target"])
    try:
        model_spec = ModelSpec.model_validate(config["model"])
        item_spec = TypeAdapter(ItemTfm | None).validate_python(config["item_transform"])
        resize = config["batch_resize"]
        augment_spec = AugmentSpec(
            min_scale=resize["min_scale"], pad_mode=resize["pad_mode"], flip_vert=resize["flip_vert"]
        )
    except (ValidationError, KeyError) as err:
        raise ImgclsError(f"{folder / PREPROCESS} is malformed: {err}") from None
    model = create_model(model_spec, info.n_out)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ImgclsError(f"cannot load {folder / WEIGHTS}: {str(err).splitlines()[0]}") from None
    runtime = resolve_runtime(RuntimeSpec(device=device, precision="fp32"), distributed=False)
    stats = config.get("normalize")
    normalizer = Normalizer(tuple(stats["mean"]), tuple(stats["std"])) if stats else None
    size = resize.get("size")
    augment = BatchAugment(augment_spec, (int(size[0]), int(size[1])) if size else None, normalizer, model_spec.n_in)
    return Predictor(
        model.to(runtime.device).eval(),
        info,
        Loss(config["loss"]),
        build_item_transform(item_spec),
        augment,
        float(config["threshold"]),
        runtime,
        f"{folder} (export)",
    )


def predictor_from_run(loaded: LoadedRun) -> Predictor:
    return Predictor(
        loaded.model.eval(),
        loaded.info,
        loaded.loss,
        build_item_transform(loaded.spec.data.item_tfm),
        loaded.augment,
        loaded.thresh,
        loaded.runtime,
        str(loaded.checkpoint.path),
    )


def load_predictor(path: Path, which: str = "best") -> Predictor:
    """An export folder (it has preprocess.json) or a run folder (its `which` checkpoint)."""
    if (path / PREPROCESS).is_file():
        return predictor_from_export(path)
    if path.is_dir() and not (path / "checkpoints").is_dir():
        raise ImgclsError(
            f"{path} is neither a run folder (no checkpoints/) nor an export folder (no {PREPROCESS})",
            hint="give the folder `imgcls train` or `imgcls export` printed",
        )
    return predictor_from_run(load_run(path, which))


__all__ = ["ExportResult", "export_run", "load_predictor", "predictor_from_export", "preprocess_config"]
