"""Calibration of a classifier's raw outputs: the map, its fit on validation logits, and the reliability bins.

A calibration is an affine map of the logits, `outputs * scale + bias`, that the activation (softmax, sigmoid) is
then applied to. Which map a target kind uses is its rule (imgcls.targets.category: one temperature;
imgcls.targets.multi_category: Platt scaling per label); the fits here minimise the negative log-likelihood of the
validation labels in float64 with L-BFGS. The expected calibration error uses 15 equal-width bins of [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

N_BINS = 15  # Guo et al. (2017)'s ECE bins, equal width
# log T and log a are kept within +-5 (factors of 0.0067..148): a validation set the model gets entirely right has
# no finite optimum (the NLL falls as T -> 0), and the bound keeps logits / T finite in float64.
LOG_BOUND = 5.0
# A confidence of exactly 1 (common in float32 softmax) belongs to the last bin, [14/15, 1]; torchmetrics'
# bucketize(right=True) would open a 16th bin for it, so confidences are kept one float32 step below 1.
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))

Method = Literal["temperature", "platt"]


@dataclass(frozen=True)
class Calibration:
    """`temperature`: outputs / T for every class (single-label). `platt`: a * outputs + b per label (multi-label),
    a > 0 so that each label's ranking of the items is unchanged."""

    method: Method
    temperature: float | None = None
    a: tuple[float, ...] = ()
    b: tuple[float, ...] = ()

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, bias) as float32 tensors that broadcast over (N, n_out) outputs."""
        if self.method == "temperature":
            assert self.temperature is not None
            return torch.tensor([1.0 / self.temperature]), torch.zeros(1)
        return torch.tensor(self.a, dtype=torch.float32), torch.tensor(self.b, dtype=torch.float32)

    def apply(self, outputs: torch.Tensor) -> torch.Tensor:
        """Calibrated raw outputs (still before the activation), float32."""
        scale, bias = self.affine()
        return outputs.float() * scale.to(outputs.device) + bias.to(outputs.device)

    def describe(self) -> str:
        if self.method == "temperature":
            return f"temperature {self.temperature:.4f} (logits / T)"
        return f"Platt scaling per label (a * logit + b), a {_spread(self.a)}, b {_spread(self.b)}"

    def formula(self) -> str:
        """What the calibrated outputs are, in terms of the raw ones."""
        if self.method == "temperature":
            return f"outputs / {self.temperature:.6g} (temperature scaling)"
        return "a * outputs + b with calibration.a and calibration.b per output (Platt scaling)"


def _spread(values: tuple[float, ...]) -> str:
    return f"{min(values):.3f}..{max(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


@dataclass(frozen=True)
class CalibrationFit:
    """A fitted calibration and how it changed the validation items' calibration (fitted and measured on the
    same items: `ece_after` is optimistic, most so on small validation sets)."""

    calibration: Calibration
    n_items: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    bins_before: pd.DataFrame
    bins_after: pd.DataFrame
    what: str  # what the bins hold, in words
    note: str = ""  # why the map is not a real fit (e.g. a minimum that does not exist), if it is not


def _bounded(raw: torch.Tensor) -> torch.Tensor:
    """An unconstrained parameter -> a log-scale within +-LOG_BOUND (0 -> 0, i.e. a factor of 1)."""
    return LOG_BOUND * torch.tanh(raw / LOG_BOUND)


def _minimise(parameters: list[torch.Tensor], loss: Callable[[], torch.Tensor]) -> None:
    optimizer = torch.optim.LBFGS(
        parameters, lr=1.0, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss()
        value.backward()  # type: ignore[no-untyped-call]
        return value

    with torch.enable_grad():
        optimizer.step(closure)  # type: ignore[no-untyped-call]


def _float64(values: torch.Tensor) -> torch.Tensor:
    # A copy: tensors made under inference_mode (the evaluation pass) cannot be saved for backward.
    return values.detach().to("cpu", torch.float64, copy=True)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T minimising the mean cross-entropy of softmax(logits / T) against class indices `labels`."""
    x, y = _float64(logits), labels.detach().to("cpu", torch.int64)
    raw = torch.zeros((), dtype=torch.float64, requires_grad=True)
    _minimise([raw], lambda: torch.nn.functional.cross_entropy(x / _bounded(raw).exp(), y))
    return float(_bounded(raw.detach()).exp())


def platt_targets(targets: torch.Tensor) -> torch.Tensor:
    """Platt (1999)'s prior-corrected targets per label: (N+ + 1) / (N+ + 2) for positives, 1 / (N- + 2) for
    negatives, so that a label with no positive (or no negative) validation item still gets a finite a and b."""
    actual = targets.detach().to("cpu", torch.float64) > 0.5
    positives = actual.sum(dim=0, dtype=torch.float64)
    negatives = actual.shape[0] - positives
    return torch.where(actual, (positives + 1) / (positives + 2), 1 / (negatives + 2))


def fit_platt(logits: torch.Tensor, targets: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per label (column) the a > 0 and b minimising the binary cross-entropy of sigmoid(a * logit + b) against
    Platt's targets. The labels' losses are independent, so one L-BFGS run over all of them finds each optimum."""
    x, t = _float64(logits), platt_targets(targets)
    raw_a = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)

    def loss() -> torch.Tensor:
        scaled = x * _bounded(raw_a).exp() + b
        # summed over labels (not averaged) so each label's gradient does not shrink with the number of labels
        return torch.nn.functional.binary_cross_entropy_with_logits(scaled, t, reduction="none").mean(dim=0).sum()

    _minimise([raw_a, b], loss)
    a = _bounded(raw_a.detach()).exp()
    return tuple(a.tolist()), tuple(b.detach().tolist())


# --- reliability ---------------------------------------------------------------------------------------------


def bin_edges(n_bins: int = N_BINS) -> torch.Tensor:
    """The float32 edges torchmetrics bins with: linspace(0, 1, n_bins + 1)."""
    return torch.linspace(0, 1, n_bins + 1, dtype=torch.float32)


def clamp_confidence(confidence: torch.Tensor) -> torch.Tensor:
    """float32 confidences with 1.0 moved one step down, into the last bin (see _BELOW_ONE)."""
    return confidence.detach().to("cpu", torch.float32).clamp(0.0, _BELOW_ONE)


def reliability_bins(confidence: torch.Tensor, outcome: torch.Tensor, n_bins: int = N_BINS) -> pd.DataFrame:
    """Per bin [lower, upper) of the confidence (the last closed): the item count, the mean confidence and the
    share of outcomes that came true (accuracy), and the gap between the two. Empty bins have count 0 and NaNs."""
    conf = clamp_confidence(confidence).double()
    hit = outcome.detach().to("cpu", torch.float64)
    edges = bin_edges(n_bins)
    index = torch.bucketize(conf.float(), edges, right=True) - 1
    counts = torch.bincount(index, minlength=n_bins).double()
    sums = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, conf)
    hits = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, hit)
    filled = counts > 0
    nan = torch.full((n_bins,), float("nan"), dtype=torch.float64)
    mean_conf = torch.where(filled, sums / counts.clamp(min=1), nan)
    accuracy = torch.where(filled, hits / counts.clamp(min=1), nan)
    frame: pd.DataFrame = pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "lower": edges[:-1].double().numpy(),
            "upper": edges[1:].double().numpy(),
            "count": counts.numpy().astype(np.int64),
            "confidence": mean_conf.numpy(),
            "accuracy": accuracy.numpy(),
            "gap": (accuracy - mean_conf).numpy(),
        }
    )
    return frame


def ece_of_bins(bins: pd.DataFrame) -> float:
    """sum over bins of count / N * |accuracy - confidence| (the hand computation of the ECE)."""
    filled = bins[bins["count"] > 0]
    total = int(filled["count"].sum())
    return float((filled["count"] / max(total, 1) * filled["gap"].abs()).sum())


def multiclass_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """torchmetrics' expected calibration error (L1, equal-width bins) of the top probability against whether the
    top class is right."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    top, predicted = probs.detach().to("cpu", torch.float32).max(dim=1)
    # the top probability moved off 1.0 moves the whole row's value the bins see; argmax is unchanged
    rows = probs.detach().to("cpu", torch.float32).clone()
    rows[torch.arange(len(rows)), predicted] = clamp_confidence(top)
    value = multiclass_calibration_error(
        rows, labels.detach().to("cpu", torch.int64), num_classes=rows.shape[1], n_bins=n_bins, norm="l1"
    )
    return float(value)


def binary_ece(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = N_BINS) -> float:
    """torchmetrics' binary expected calibration error over every (item, label) probability: bins of the
    probability that the label is present against the share of cells where it is."""
    from torchmetrics.functional.classification import binary_calibration_error

    flat = clamp_confidence(probs.reshape(-1))
    actual = (targets.detach().to("cpu").reshape(-1) > 0.5).to(torch.int64)
    return float(binary_calibration_error(flat, actual, n_bins=n_bins, norm="l1"))


__all__ = [
    "LOG_BOUND",
    "N_BINS",
    "Calibration",
    "CalibrationFit",
    "binary_ece",
    "bin_edges",
    "clamp_confidence",
    "ece_of_bins",
    "fit_platt",
    "fit_temperature",
    "multiclass_ece",
    "platt_targets",
    "reliability_bins",
]
