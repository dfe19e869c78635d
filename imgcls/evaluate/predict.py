"""Prediction on image files with the validation transforms, from a run folder or an export folder, through the
same data path and evaluation pass as validation: item transform in worker processes, one batch resize and
normalization on the device; point predictions are mapped back to the pixels of the original files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from imgcls.augment.loader import BatchOptions, DeviceLoader
from imgcls.augment.pipeline import BatchAugment
from imgcls.data.dataset import ImageDataset
from imgcls.data.images import oriented_size
from imgcls.data.item_tfms import ItemTransform, build_item_transform, item_to_source
from imgcls.data.loaders import FixedBatchSampler, default_workers, make_loader
from imgcls.errors import ImgclsError, SpecError
from imgcls.evaluate.load import RUN_FOLDER_HOLDS, LoadedRun, load_run
from imgcls.evaluate.tta import BETA, N_AUGMENTED, blend, check_options
from imgcls.registry import did_you_mean
from imgcls.report.console import Console
from imgcls.spec.data import IMAGE_EXTENSIONS
from imgcls.spec.train import RuntimeSpec
from imgcls.targets import Target
from imgcls.targets.base import Threshold, label_vector
from imgcls.targets.calibration import Calibration
from imgcls.targets.point import as_points
from imgcls.train.builder import batch_augment, inference_model, normalizer_from
from imgcls.train.evaluation import Predictions, evaluate
from imgcls.train.record import ExportRecord
from imgcls.train.runtime import Runtime, resolve_runtime

TOP_K = 3
BATCH_SIZE = 32
PREPROCESS, WEIGHTS = "preprocess.json", "model.safetensors"


@dataclass
class Predictor:
    """A model with the preprocessing it was validated with: item transform (validation mode), batch resize and
    normalization; predictions are activated outputs (probabilities, or values for points and regression), of
    the calibrated outputs when there is a calibration."""

    model: nn.Module
    target: Target
    item_tfm: ItemTransform | None
    augment: BatchAugment
    thresh: Threshold
    runtime: Runtime
    source: str  # what it was loaded from, for messages
    workers: int = 0
    # The training batch transform without its regularizers (predict --tta); None for exports that lack it.
    tta_augment: BatchAugment | None = None
    calibration: Calibration | None = None

    def activate(self, outputs: torch.Tensor) -> torch.Tensor:
        """Raw outputs -> probabilities or values: calibrated first when there is a calibration."""
        if self.calibration is not None:
            outputs = self.calibration.apply(outputs)
        return self.target.activation(outputs)

    def batches(self, files: Sequence[Path], bs: int, augmented: int | None = None) -> DeviceLoader:
        """The files in batches that collate: any `bs` when the item transform gives one size, else grouped by
        each file's size (from its header). `augmented` N: TTA pass N, through the training batch transform
        with its own seed (items stay in their validation form)."""
        positions = list(range(len(files)))
        if self.item_tfm is not None:
            groups = [positions[i : i + bs] for i in range(0, len(files), bs)]
        else:
            groups = _same_size_batches(files, bs)
        sampler = FixedBatchSampler(groups)
        dataset = ImageDataset(list(files), None, np.array(positions), self.item_tfm, train=False, seed=0)
        loader = make_loader(dataset, sampler, self.workers, self.runtime.device.type == "cuda")
        augment = self.augment
        if augmented is not None:
            if self.tta_augment is None:
                raise ImgclsError(
                    f"{self.source} does not record the training transforms that --tta augments with",
                    hint="export the run again with this imgcls, or predict from the run folder",
                )
            augment = self.tta_augment
        train = augmented is not None
        options = BatchOptions(train=train, seed=augmented or 0, channels_last=self.runtime.channels_last)
        return DeviceLoader(loader, sampler, augment, self.runtime.device, options, on_bad_image="skip")


def source_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image as displayed (after EXIF), from its header only; None if it is unreadable."""
    try:
        with Image.open(path) as image:
            return oriented_size(image)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None


def _same_size_batches(files: Sequence[Path], bs: int) -> list[list[int]]:
    """Positions grouped by image size, each group cut into batches of at most bs (unreadable files alone)."""
    groups: dict[tuple[int, int] | int, list[int]] = {}
    for position, file in enumerate(files):
        size = source_size(file)
        groups.setdefault(size if size is not None else -position - 1, []).append(position)
    batches = [members[i : i + bs] for members in groups.values() for i in range(0, len(members), bs)]
    return sorted(batches, key=lambda batch: batch[0])


# --- loading ------------------------------------------------------------------------------------------------


def predictor_from_run(loaded: LoadedRun, calibration: Calibration | None = None) -> Predictor:
    spec = loaded.spec
    workers = default_workers() if spec.data.num_workers == "auto" else spec.data.num_workers
    return Predictor(
        loaded.model.eval(),
        loaded.target,
        build_item_transform(spec.data.item_tfm),
        loaded.augment,
        loaded.pipeline.decision,
        loaded.runtime,
        str(loaded.checkpoint.path),
        workers,
        loaded.augment.for_tta(),
        calibration,
    )


def predictor_from_export(folder: Path, device: str = "auto") -> Predictor:
    """Rebuild the model from preprocess.json and model.safetensors; nothing of the training run is needed, and
    nothing is downloaded (the model is never built pretrained). A calibration in preprocess.json is applied."""
    record = ExportRecord.read(folder / PREPROCESS)
    target = record.target.block()
    try:
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError) as err:
        raise ImgclsError(f"cannot load {folder / WEIGHTS}: {str(err).splitlines()[0]}") from None
    try:
        model = inference_model(record.model.spec(), target, state, str(folder / WEIGHTS))
    except RuntimeError as err:
        raise ImgclsError(f"cannot load {folder / WEIGHTS}: {str(err).splitlines()[0]}") from None
    runtime = resolve_runtime(RuntimeSpec(device=device, precision="fp32"), distributed=False)
    size, normalizer, n_in = record.batch_resize.size, normalizer_from(record.normalize), record.model.n_in
    augment = batch_augment(record.augment_spec(), size, normalizer, n_in)
    tta_spec = record.tta_spec()
    tta_augment = None if tta_spec is None else batch_augment(tta_spec, size, normalizer, n_in).for_tta()
    return Predictor(
        model.to(runtime.device),
        target,
        build_item_transform(record.item_tfm_spec()),
        augment,
        record.decision(),
        runtime,
        f"{folder} (export)",
        default_workers(),
        tta_augment,
        record.calibration.calibration() if record.calibration is not None else None,
    )


def load_predictor(
    path: Path, which: str = "best", calibrate: bool = False, calibration_file: Path | None = None
) -> Predictor:
    """An export folder (it has preprocess.json; calibrated if it was exported with --calibrate) or a run folder
    (its `which` checkpoint; calibrated with `calibrate` or a `calibration_file`, by the fit `imgcls interpret`
    wrote)."""
    if (path / PREPROCESS).is_file():
        predictor = predictor_from_export(path)
        if calibration_file is not None:
            raise ImgclsError(
                f"{path} is an export: its calibration is the one in {PREPROCESS}",
                hint="leave --calibration out, or export the run again with --calibrate --calibration FILE",
            )
        if calibrate and predictor.calibration is None:
            raise ImgclsError(
                f"{path} was exported without a calibration", hint="export the run again with --calibrate"
            )
        return predictor
    if path.is_dir() and not (path / "checkpoints").is_dir():
        raise ImgclsError(
            f"{path} is neither a run folder (no checkpoints/) nor an export folder (no {PREPROCESS})",
            hint=f"{RUN_FOLDER_HOLDS}; an export folder (`imgcls export`) holds {PREPROCESS} and {WEIGHTS}",
        )
    loaded = load_run(path, which)
    calibration = loaded.calibration(calibration_file) if calibrate or calibration_file is not None else None
    return predictor_from_run(loaded, calibration)


# --- predicting -------------------------------------------------------------------------------------------------


def find_images(inputs: Sequence[Path]) -> list[Path]:
    """Files as given; folders searched recursively for image files (hidden entries skipped), sorted."""
    extensions = {e.lower() for e in IMAGE_EXTENSIONS}
    found: list[Path] = []
    for path in inputs:
        if not path.is_dir():
            found.append(path)
            continue
        for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found.extend(
                Path(dirpath) / name
                for name in sorted(filenames)
                if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions
            )
    return found


@dataclass
class FilePrediction:
    file: Path
    values: np.ndarray | None = None  # activated outputs
    size: tuple[int, int] | None = None  # original (width, height)
    points: np.ndarray | None = None  # (P, 2) in original pixels
    error: str | None = None


@dataclass(frozen=True)
class FileTTA:
    """predict --tta: `n` augmented passes blended with the plain one as tta-eval blends them."""

    n: int = N_AUGMENTED
    beta: float = BETA
    use_max: bool = False


def _tta_values(
    predictor: Predictor,
    files: Sequence[Path],
    bs: int,
    plain: Predictions,
    options: FileTTA,
    console: Console | None,
) -> torch.Tensor:
    """fastai's learn.tta(dl=test_dl): the files through the training batch transform `n` times (each pass with
    its own seed), every pass carried into the plain pass's frame (points), blended with the plain values."""
    target = predictor.target
    augmented = []
    for number in range(1, options.n + 1):
        batches = predictor.batches(files, bs, augmented=number)
        result = evaluate(predictor.model, batches, predictor.runtime, console, f"augmented pass {number}/{options.n}")
        if not torch.equal(result.indices, plain.indices):
            raise ImgclsError("an augmented pass read other files than the plain pass (did a file change?)")
        augmented.append(target.to_frame(predictor.activate(result.outputs), result.geometry, plain.geometry))
    return blend(predictor.activate(plain.outputs), augmented, options.beta, options.use_max)


def predict_files(
    predictor: Predictor,
    files: Sequence[Path],
    bs: int = BATCH_SIZE,
    console: Console | None = None,
    tta: FileTTA | None = None,
) -> list[FilePrediction]:
    """One FilePrediction per file, in the order of `files`; unreadable files carry an error instead of values.
    With `tta`, the values are the blend of the plain pass and augmented ones."""
    if tta is not None:
        check_options(predictor.target, tta.n, tta.use_max)
        if predictor.tta_augment is None:
            predictor.batches([], bs, augmented=1)  # the error that says what to do, before any work
    results = [FilePrediction(file) for file in files]
    batches = predictor.batches(files, bs)
    predictions = evaluate(predictor.model, batches, predictor.runtime, console, "predict")
    for bad in batches.skipped:
        results[bad.index].error = bad.reason
    if tta is not None and len(predictions):
        values = _tta_values(predictor, files, bs, predictions, tta, console)
    else:
        values = predictor.activate(predictions.outputs)
    item_points = None
    if predictor.target.spatial:
        item_points = predictions.geometry.to_input(as_points(values))
    for row, position in enumerate(predictions.indices.tolist()):
        record = results[position]
        record.values = values[row].numpy()
        record.size = source_size(record.file)
        if item_points is not None and record.size is not None:
            window = predictor.item_tfm.window(record.size, None) if predictor.item_tfm is not None else None
            record.points = item_to_source(item_points[row].numpy(), window, record.size)
    return results


def resolve_threshold(text: str | None, target: Target, default: Threshold) -> Threshold:
    """--thresh as given: '0.4' for every label, or 'circle=0.3,square=0.6' for some labels (the others keep
    `default`, the run's); nothing given: `default`."""
    if text is None or not text.strip():
        return default
    if "=" not in text:
        return _probability(text, "--thresh")
    target.require_per_label(f"--thresh {text}")
    values = [float(v) for v in label_vector(default, target.n_out)]
    for part in (p.strip() for p in text.split(",") if p.strip()):
        label, _, value = part.partition("=")
        label = label.strip()
        if label not in target.vocab:
            raise SpecError(
                f"--thresh: unknown label '{label}'{did_you_mean(label, list(target.vocab))}",
                hint=f"the run's labels: {', '.join(target.vocab)}",
            )
        values[target.vocab.index(label)] = _probability(value, f"--thresh {label}")
    return tuple(values)


def _probability(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{what}: '{text}' is not a number", hint="write e.g. 0.4, or circle=0.3,square=0.6") from None
    if not 0.0 <= value <= 1.0:
        raise SpecError(f"{what}: {value:g} is not a probability between 0 and 1")
    return value


def prediction_frame(
    predictor: Predictor,
    predictions: Sequence[FilePrediction],
    top_k: int = TOP_K,
    thresh: Threshold | None = None,
    min_confidence: float | None = None,
) -> pd.DataFrame:
    """One row per file: `file`, `error`, then the target's columns: pred_i/prob_i (top-k classes); labels and
    prob_<label> (multi-label, labels above the threshold); x_i/y_i in original pixels (points); value_i.
    `min_confidence` withholds what is less probable (the target's rule: a `label` column that is `unknown` for
    a classifier, fewer `labels` for a multi-label model)."""
    target = predictor.target
    thresh = predictor.thresh if thresh is None else thresh
    withheld = target.withheld_columns() if min_confidence is not None else []
    rows = []
    for prediction in predictions:
        row: dict[str, object] = {"file": str(prediction.file), "error": prediction.error or ""}
        if prediction.values is not None:
            row.update(target.prediction_row(prediction.values, prediction.points, prediction.size, top_k, thresh))
            if min_confidence is not None:
                row = target.withhold(row, prediction.values, min_confidence, thresh)
        rows.append(row)
    frame: pd.DataFrame = pd.DataFrame(rows, columns=["file", "error", *withheld, *target.prediction_columns(top_k)])
    return frame


def validation_values(loaded: LoadedRun) -> tuple[torch.Tensor, torch.Tensor]:
    """Activated outputs and targets of the run's validation items, in item order (what predict must match)."""
    predictions = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    return loaded.target.activation(predictions.outputs), predictions.targets


__all__ = [
    "FilePrediction",
    "FileTTA",
    "Predictor",
    "find_images",
    "load_predictor",
    "predict_files",
    "prediction_frame",
    "resolve_threshold",
    "predictor_from_export",
    "predictor_from_run",
    "source_size",
]
