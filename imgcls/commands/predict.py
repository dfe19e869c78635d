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
    Predictor,
    find_images,
    load_predictor,
    predict_files,
    prediction_frame,
)
from imgcls.report.console import Console
from imgcls.spec.data import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class PredictOptions:
    which: str = "best"  # the run's checkpoint (run folders only)
    top_k: int = TOP_K
    thresh: float | None = None  # multi-label decision threshold (default: the run's)
    bs: int = BATCH_SIZE
    quiet: bool = False
    # calibration (imgcls interpret's fit) for a run folder; an export applies the one it was exported with
    calibrate: bool = False
    calibration_file: Path | None = None
    min_confidence: float | None = None  # withhold predictions less probable than this


def run_predict(source: Path, inputs: Sequence[Path], out: Path, options: PredictOptions | None = None) -> pd.DataFrame:
    options = options or PredictOptions()
    console = Console(options.quiet)
    top_k, bs, min_confidence = options.top_k, options.bs, options.min_confidence
    if top_k < 1 or bs < 1:
        raise DataError(f"--top-k and --bs must be at least 1, got {top_k} and {bs}")
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise DataError(f"--min-confidence is a probability between 0 and 1, got {min_confidence}")
    predictor = load_predictor(source, options.which, options.calibrate, options.calibration_file)
    if min_confidence is not None and not predictor.target.probabilities:
        raise ImgclsError(
            f"--min-confidence needs a classifier; {source} predicts {predictor.target.kind} targets",
            hint="leave --min-confidence out for point and regression models",
        )
    files = find_images(inputs)
    if not files:
        raise DataError(
            f"no image files under {', '.join(str(p) for p in inputs)}",
            hint=f"give image files or folders holding {', '.join(IMAGE_EXTENSIONS)} files",
        )
    calibrated = f", calibrated: {predictor.calibration.describe()}" if predictor.calibration is not None else ""
    console.info(f"predicting {len(files)} file(s) with {predictor.source}{calibrated}")
    predictions = predict_files(predictor, files, bs, console)
    frame = prediction_frame(predictor, predictions, top_k, options.thresh, min_confidence)
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
