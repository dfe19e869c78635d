"""`imgcls predict`: batch prediction on image files with the validation transforms, from a run folder or an export
folder (`imgcls export`), with point predictions mapped back to the pixels of the original files."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from imgcls.augment.pipeline import BatchAugment
from imgcls.data.blocks import TargetInfo, unscale_points
from imgcls.data.images import oriented_size, read_image
from imgcls.data.item_tfms import ItemTransform, Window, apply_window
from imgcls.errors import DataError, ImageReadError
from imgcls.evaluate.passes import as_points
from imgcls.report.console import Console
from imgcls.spec.data import IMAGE_EXTENSIONS
from imgcls.train.losses import Loss
from imgcls.train.runtime import Runtime

TOP_K = 3
BATCH_SIZE = 32

# A file ready for the model: pixels after the item transform, the original (width, height), the window.
Loaded = tuple[np.ndarray, tuple[int, int], Window | None]


# --- frames ---------------------------------------------------------------------------------------------------


def item_to_source(points: np.ndarray, window: Window | None, size: tuple[int, int]) -> np.ndarray:
    """Points (..., 2) in [-1, 1] of the item transform's output -> pixels of the original (width, height) image:
    the inverse of Window.map_points followed by scale_points."""
    if window is None:
        return unscale_points(points, size)
    left, top, right, bottom = window.box
    x = left + (points[..., 0] + 1.0) * 0.5 * (right - left)
    y = top + (points[..., 1] + 1.0) * 0.5 * (bottom - top)
    return np.stack([x, y], axis=-1).astype(np.float32)


def source_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as displayed (after EXIF), from its header only."""
    try:
        with Image.open(path) as image:
            return oriented_size(image)
    except (OSError, UnidentifiedImageError) as err:
        raise ImageReadError(str(path), str(err)) from None


# --- the predictor ----------------------------------------------------------------------------------------------


@dataclass
class Predictor:
    """A model with the preprocessing it was validated with: item transform (validation mode), batch resize and
    normalization; `values` are activated outputs (probabilities, or values for points and regression)."""

    model: nn.Module
    info: TargetInfo
    loss: Loss
    item_tfm: ItemTransform | None
    augment: BatchAugment
    thresh: float
    runtime: Runtime
    source: str  # what it was loaded from, for messages

    def load(self, path: Path) -> Loaded:
        """HWC uint8 pixels after the item transform, the original size and the window (as the dataset loads)."""
        plan: list[Window | None] = []

        def draft_for(size: tuple[int, int]) -> tuple[int, int] | None:
            plan.append(self.item_tfm.window(size, None) if self.item_tfm is not None else None)
            return plan[0].draft_size(size) if plan[0] is not None else None

        image, size = read_image(path, draft_for)
        window = plan[0]
        pixels = apply_window(image, window, size) if window is not None else np.asarray(image)
        return pixels, size, window

    def values(self, pixels: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Activated outputs for same-sized HWC uint8 images; for points also (N, P, 2) in the item frame."""
        # Stacked NHWC and viewed as NCHW, exactly as the training collate does.
        images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).to(self.runtime.device)
        x, _, geometry = self.augment.with_geometry(images, train=False)
        if self.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self.runtime.autocast():
            values = self.loss.activation(self.model(x).float())
        if self.info.kind != "point":
            return values.cpu(), None
        return values.cpu(), geometry.to_input(as_points(values)).cpu()


# --- files ------------------------------------------------------------------------------------------------------


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


def _batches(predictor: Predictor, files: Sequence[Path], bs: int) -> Iterator[list[tuple[int, Loaded | str]]]:
    """(position in `files`, loaded file or the reason it cannot be read), in batches of the same pixel shape
    (an unreadable file comes in a batch of its own)."""
    pending: list[tuple[int, Loaded | str]] = []
    for position, file in enumerate(files):
        try:
            loaded = predictor.load(file)
        except ImageReadError as err:
            yield [(position, err.reason)]
            continue
        first = pending[0][1] if pending else None
        if isinstance(first, tuple) and (len(pending) == bs or first[0].shape != loaded[0].shape):
            yield pending
            pending = []
        pending.append((position, loaded))
    if pending:
        yield pending


def predict_files(
    predictor: Predictor, files: Sequence[Path], bs: int = BATCH_SIZE, console: Console | None = None
) -> list[FilePrediction]:
    """One FilePrediction per file, in the order of `files`; unreadable files carry an error instead of values."""
    results = [FilePrediction(file) for file in files]
    if console is not None:
        console.start_bar(len(files), "predict")
    try:
        for batch in _batches(predictor, files, bs):
            ready = [(position, loaded) for position, loaded in batch if not isinstance(loaded, str)]
            for position, reason in batch:
                if isinstance(reason, str):
                    results[position].error = reason
            if ready:
                values, item_points = predictor.values([loaded[0] for _, loaded in ready])
                for index, (position, (_, size, window)) in enumerate(ready):
                    record = results[position]
                    record.values, record.size = values[index].numpy(), size
                    if item_points is not None:
                        record.points = item_to_source(item_points[index].numpy(), window, size)
            if console is not None:
                console.advance_bar(len(batch))
    finally:
        if console is not None:
            console.stop_bar()
    return results


def prediction_frame(
    predictor: Predictor, predictions: Sequence[FilePrediction], top_k: int = TOP_K, thresh: float | None = None
) -> pd.DataFrame:
    """One row per file: `file`, `error`, then by target kind: pred_i/prob_i (top-k classes); labels and
    prob_<label> (multi-label, labels above the threshold); x_i/y_i in original pixels (points); value_i."""
    info = predictor.info
    thresh = predictor.thresh if thresh is None else thresh
    rows = []
    for prediction in predictions:
        row: dict[str, object] = {"file": str(prediction.file), "error": prediction.error or ""}
        values = prediction.values
        if values is not None:
            row.update(_decoded(info, values, prediction, top_k, thresh))
        rows.append(row)
    frame: pd.DataFrame = pd.DataFrame(rows, columns=_columns(info, top_k))
    return frame


def _columns(info: TargetInfo, top_k: int) -> list[str]:
    columns = ["file", "error"]
    if info.kind == "category":
        for rank in range(1, min(top_k, info.n_out) + 1):
            columns += [f"pred_{rank}", f"prob_{rank}"]
    elif info.kind == "multi_category":
        columns += ["labels", *(f"prob_{label}" for label in info.vocab)]
    elif info.kind == "point":
        for number in range(1, info.n_points + 1):
            columns += [f"x_{number}", f"y_{number}"]
        columns += ["width", "height"]
    else:
        columns += [f"value_{number}" for number in range(1, info.n_out + 1)]
    return columns


def _decoded(
    info: TargetInfo, values: np.ndarray, prediction: FilePrediction, top_k: int, thresh: float
) -> dict[str, object]:
    row: dict[str, object] = {}
    if info.kind == "category":
        order = np.argsort(-values, kind="stable")[: min(top_k, info.n_out)]
        for rank, index in enumerate(order, start=1):
            row[f"pred_{rank}"], row[f"prob_{rank}"] = info.vocab[index], float(values[index])
    elif info.kind == "multi_category":
        row["labels"] = " ".join(label for label, p in zip(info.vocab, values, strict=True) if p > thresh)
        row.update({f"prob_{label}": float(p) for label, p in zip(info.vocab, values, strict=True)})
    elif info.kind == "point":
        assert prediction.points is not None and prediction.size is not None
        for number, (x, y) in enumerate(prediction.points, start=1):
            row[f"x_{number}"], row[f"y_{number}"] = float(x), float(y)
        row["width"], row["height"] = prediction.size
    else:
        row.update({f"value_{number}": float(v) for number, v in enumerate(values, start=1)})
    return row


def run_predict(
    source: Path,
    inputs: Sequence[Path],
    out: Path,
    which: str = "best",
    top_k: int = TOP_K,
    thresh: float | None = None,
    bs: int = BATCH_SIZE,
    quiet: bool = False,
) -> pd.DataFrame:
    """`imgcls predict`: predictions for every image under `inputs`, written to the CSV `out`."""
    from imgcls.evaluate.export import load_predictor

    console = Console(quiet)
    if top_k < 1 or bs < 1:
        raise DataError(f"--top-k and --bs must be at least 1, got {top_k} and {bs}")
    predictor = load_predictor(source, which)
    files = find_images(inputs)
    if not files:
        raise DataError(
            f"no image files under {', '.join(str(p) for p in inputs)}",
            hint=f"give image files or folders holding {', '.join(IMAGE_EXTENSIONS)} files",
        )
    console.info(f"predicting {len(files)} file(s) with {predictor.source}")
    predictions = predict_files(predictor, files, bs, console)
    frame = prediction_frame(predictor, predictions, top_k, thresh)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.6g")
    failed = [p for p in predictions if p.error is not None]
    _show(console, predictor, frame, failed)
    console.info(f"wrote {out}: {len(files) - len(failed)} prediction(s), {len(failed)} unreadable file(s)")
    return frame


def _show(console: Console, predictor: Predictor, frame: pd.DataFrame, failed: list[FilePrediction]) -> None:
    """The first rows, in words, and every unreadable file."""
    shown = frame[frame["error"] == ""].head(10)
    info = predictor.info
    for _, row in shown.iterrows():
        name = str(row["file"])
        if info.kind == "category":
            text = ", ".join(f"{row[f'pred_{r}']} {row[f'prob_{r}']:.3f}" for r in range(1, 4) if f"pred_{r}" in row)
        elif info.kind == "multi_category":
            text = str(row["labels"]) or "(no label above the threshold)"
        elif info.kind == "point":
            text = "  ".join(f"({row[f'x_{i}']:.1f}, {row[f'y_{i}']:.1f})" for i in range(1, info.n_points + 1))
            text += f" px of {row['width']}x{row['height']}"
        else:
            text = ", ".join(f"{row[c]:.4g}" for c in frame.columns if c.startswith("value_"))
        console.info(f"  {name}  {text}")
    if len(frame) > len(shown) + len(failed):
        console.info(f"  ... ({len(frame) - len(failed)} in all)")
    for record in failed:
        console.warn(f"cannot read {record.file}: {record.error}")


__all__ = ["FilePrediction", "Predictor", "find_images", "item_to_source", "predict_files", "run_predict"]
