"""`imgcls predict`: predictions for every image under the inputs, written to a CSV file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from imgcls.errors import DataError, ImgclsError
from imgcls.evaluate.predict import (
    BATCH_SIZE,
    TOP_K,
    FilePrediction,
    FileTTA,
    Predictor,
    find_images,
    load_predictor,
    predict_files,
    prediction_frame,
    resolve_threshold,
)
from imgcls.report.console import Console
from imgcls.spec.data import IMAGE_EXTENSIONS
from imgcls.targets.base import threshold_text


@dataclass(frozen=True)
class PredictOptions:
    which: str = "best"  # the run's checkpoint (run folders only)
    top_k: int = TOP_K
    thresh: str | None = None  # '0.4', or 'label=0.3,other=0.6'; None: the run's
    bs: int = BATCH_SIZE
    tta: FileTTA | None = None
    quiet: bool = False
    # calibration (imgcls interpret's fit) for a run folder; an export applies the one it was exported with
    calibrate: bool = False
    calibration_file: Path | None = None
    min_confidence: float | None = None  # withhold predictions less probable than this


def _check(options: PredictOptions) -> None:
    if options.top_k < 1 or options.bs < 1:
        raise DataError(f"--top-k and --bs must be at least 1, got {options.top_k} and {options.bs}")
    confidence = options.min_confidence
    if confidence is not None and not 0.0 <= confidence <= 1.0:
        raise DataError(f"--min-confidence is a probability between 0 and 1, got {confidence}")


def _how(predictor: Predictor, options: PredictOptions, decision: object) -> str:
    """What the predictions are made with, for the first line."""
    how, tta = "", options.tta
    if predictor.calibration is not None:
        how += f", calibrated: {predictor.calibration.describe()}"
    if tta is not None:
        blended = "max(plain, max(augmented))" if tta.use_max else f"{1 - tta.beta:g} * mean + {tta.beta:g} * plain"
        how += f", TTA: {tta.n} augmented pass(es) with the training transforms + 1 plain, {blended}"
    if predictor.target.per_label_thresholds:
        how += f"; threshold {threshold_text(decision, predictor.target.vocab)}"  # type: ignore[arg-type]
    return how


def run_predict(source: Path, inputs: Sequence[Path], out: Path, options: PredictOptions | None = None) -> pd.DataFrame:
    options = options or PredictOptions()
    console = Console(options.quiet)
    _check(options)
    predictor = load_predictor(source, options.which, options.calibrate, options.calibration_file)
    if options.min_confidence is not None and not predictor.target.probabilities:
        raise ImgclsError(
            f"--min-confidence needs a classifier; {source} predicts {predictor.target.kind} targets",
            hint="leave --min-confidence out for point and regression models",
        )
    decision = resolve_threshold(options.thresh, predictor.target, predictor.thresh)
    files = find_images(inputs)
    if not files:
        raise DataError(
            f"no image files under {', '.join(str(p) for p in inputs)}",
            hint=f"give image files or folders holding {', '.join(IMAGE_EXTENSIONS)} files",
        )
    console.info(f"predicting {len(files)} file(s) with {predictor.source}{_how(predictor, options, decision)}")
    predictions = predict_files(predictor, files, options.bs, console, options.tta)
    frame = prediction_frame(predictor, predictions, options.top_k, decision, options.min_confidence)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.6g")
    failed = [p for p in predictions if p.error is not None]
    _show(console, predictor, frame, failed)
    console.info(f"wrote {out}: {len(files) - len(failed)} prediction(s), {len(failed)} unreadable file(s)")
    return frame


def _show(console: Console, predictor: Predictor, frame: pd.DataFrame, failed: list[FilePrediction]) -> None:
    """The first rows, in words, and every unreadable file."""
    shown = frame[frame["error"] == ""].head(10)
    for _, row in shown.iterrows():
        console.info(f"  {row['file']}  {predictor.target.prediction_text(row.to_dict())}")
    if len(frame) > len(shown) + len(failed):
        console.info(f"  ... ({len(frame) - len(failed)} in all)")
    for record in failed:
        console.warn(f"cannot read {record.file}: {record.error}")
