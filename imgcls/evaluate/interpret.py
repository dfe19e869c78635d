"""`imgcls interpret`: what a trained model gets wrong on its validation set, through its target's report.

Classification: confusion matrix (counts and row-normalized, CSV and PNG), most confused pairs, precision, recall and
F1 per class, and the top losses as fastai's plot_top_losses shows them. Multi-label: per-label precision, recall,
F1 and accuracy at the run's threshold, and accuracy_multi against the threshold (the book's sweep). Points: the
error of every validation image in original pixels and at the model's input size, and the worst images with the
true and the predicted points drawn. Regression: MAE, RMSE, bias and R² per target, predicted against actual, and the
images with the largest errors.

Classifiers are also calibrated on the validation logits (the target's rule: one temperature for single-label,
Platt scaling per label for multi-label), with the expected calibration error before and after and a reliability
diagram; the command keeps the fit in calibration.json for `export --calibrate` and `predict --calibrate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imgcls.errors import ImgclsError
from imgcls.evaluate.load import LoadedRun
from imgcls.report.console import Console
from imgcls.targets.base import Evaluated, ReportContext
from imgcls.targets.calibration import CalibrationFit
from imgcls.train.evaluation import evaluate, evaluated

TOP_K = 9


def validation_report(loaded: LoadedRun, console: Console | None = None) -> Evaluated:
    """The run's model over its validation set, with what the target's reports read."""
    pipeline = loaded.pipeline
    predictions = evaluate(loaded.model, pipeline.batches("valid"), loaded.runtime, console, "validation")
    if len(predictions) == 0:
        raise ImgclsError("no validation item could be evaluated", hint="check the split and the image files")
    return evaluated(predictions, pipeline, loaded.augment)


@dataclass
class Interpretation:
    evaluated: Evaluated
    files: list[str]  # written into the folder
    calibration: CalibrationFit | None  # classifiers: fitted on the validation outputs


def interpret(loaded: LoadedRun, folder: Path, console: Console, k: int = TOP_K, min_count: int = 1) -> Interpretation:
    """Print the target's interpretation of the validation predictions and write its files into `folder`."""
    result = validation_report(loaded, console)
    target = loaded.target
    fit = None
    if target.calibration_method is not None:
        fit = target.fit_calibration(result.outputs, result.targets)
    ctx = ReportContext(result, folder, console, k, min_count, calibration=fit)
    return Interpretation(result, target.interpret(ctx), fit)


__all__ = ["TOP_K", "Interpretation", "interpret", "validation_report"]
