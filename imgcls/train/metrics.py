"""Metrics, computed once over every validation item's raw outputs and targets (never averaged per batch)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from imgcls.spec.train import (
    AccuracyMultiSpec,
    AccuracySpec,
    F1Spec,
    RegressionMetricSpec,
    TopKSpec,
)
from imgcls.spec.train import (
    Metric as MetricSpec,
)


@dataclass(frozen=True)
class Metric:
    """A column of metrics.csv: `fn(outputs, targets)` over the whole validation set."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], float]
    higher_is_better: bool


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return float((outputs.argmax(dim=-1) == targets).float().mean())


def balanced_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The mean recall over the classes that have validation items (sklearn's balanced_accuracy_score)."""
    n_classes = outputs.shape[-1]
    actual = targets.long()
    support = torch.bincount(actual, minlength=n_classes)
    right = torch.bincount(actual[outputs.argmax(dim=-1) == actual], minlength=n_classes)
    present = support > 0
    if not bool(present.any()):
        return float("nan")
    return float((right[present].double() / support[present].double()).mean())


def top_k_accuracy(outputs: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    k = min(k, outputs.shape[-1])
    top = outputs.topk(k, dim=-1).indices
    return float((top == targets[:, None]).any(dim=-1).float().mean())


def accuracy_multi(outputs: torch.Tensor, targets: torch.Tensor, thresh: float, sigmoid: bool = True) -> float:
    """Share of (item, label) cells decided right at `thresh` (fastai's accuracy_multi)."""
    probs = torch.sigmoid(outputs) if sigmoid else outputs
    return float(((probs > thresh) == targets.bool()).float().mean())


def _f1(predicted: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """Per-column F1 of boolean (N, C) decisions; a column with nothing predicted or present scores 0."""
    true_pos = (predicted & actual).sum(dim=0).float()
    denominator = predicted.sum(dim=0).float() + actual.sum(dim=0).float()
    return torch.where(denominator > 0, 2 * true_pos / denominator.clamp(min=1), torch.zeros_like(true_pos))


def f1_macro(outputs: torch.Tensor, targets: torch.Tensor, thresh: float) -> float:
    """Mean F1 over classes (single-label: argmax decisions) or labels (multi-label: sigmoid > thresh)."""
    if targets.ndim == 1:
        n_classes = outputs.shape[-1]
        predicted = torch.nn.functional.one_hot(outputs.argmax(dim=-1), n_classes).bool()
        actual = torch.nn.functional.one_hot(targets.long(), n_classes).bool()
    else:
        predicted, actual = torch.sigmoid(outputs) > thresh, targets.bool()
    return float(_f1(predicted, actual).mean())


def rmse(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return float(torch.sqrt(((outputs - targets.reshape(outputs.shape)) ** 2).mean()))


def mae(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return float((outputs - targets.reshape(outputs.shape)).abs().mean())


POINT_PIXELS = "error_px"  # the metrics.csv column of point_pixels


def point_pixels(outputs: torch.Tensor, targets: torch.Tensor, size: tuple[int, int]) -> float:
    """Mean Euclidean distance between predicted and true points in pixels of the model input of `size`
    (height, width): [-1, 1] spans the width in x and the height in y, so one unit is width/2 or height/2 px."""
    height, width = size
    half = torch.tensor([width / 2, height / 2], dtype=torch.float32, device=outputs.device)
    predicted = outputs.float().reshape(outputs.shape[0], -1, 2) * half
    actual = targets.float().reshape(predicted.shape) * half
    return float(torch.linalg.vector_norm(predicted - actual, dim=-1).mean())


def pixel_metric(size: tuple[int, int]) -> Metric:
    """The point error in pixels at one stage's input size (a point run's column besides rmse and mae)."""
    return Metric(POINT_PIXELS, lambda o, t: point_pixels(o, t, size), higher_is_better=False)


def build_metric(spec: MetricSpec) -> Metric:
    if isinstance(spec, AccuracySpec):
        plain = {
            "accuracy": Metric("accuracy", accuracy, higher_is_better=True),
            "error_rate": Metric("error_rate", lambda o, t: 1.0 - accuracy(o, t), higher_is_better=False),
            "balanced_accuracy": Metric("balanced_accuracy", balanced_accuracy, higher_is_better=True),
        }
        return plain[spec.name]
    if isinstance(spec, TopKSpec):
        k = spec.k
        return Metric(f"top_{k}_accuracy", lambda o, t: top_k_accuracy(o, t, k), higher_is_better=True)
    if isinstance(spec, AccuracyMultiSpec):
        thresh = spec.thresh
        return Metric("accuracy_multi", lambda o, t: accuracy_multi(o, t, thresh), higher_is_better=True)
    if isinstance(spec, F1Spec):
        thresh = spec.thresh
        return Metric("f1_macro", lambda o, t: f1_macro(o, t, thresh), higher_is_better=True)
    assert isinstance(spec, RegressionMetricSpec)
    return Metric(spec.name, rmse if spec.name == "rmse" else mae, higher_is_better=False)


def lower_is_better(name: str) -> bool:
    """fastai's rule for `mode: auto`: losses and errors go down, everything else up."""
    return "loss" in name or "error" in name or name in ("rmse", "mae")
