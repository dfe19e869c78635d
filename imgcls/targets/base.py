"""The target block protocol: what a model predicts, and every rule that depends on what it predicts.

A target block is created by `encode` from the raw labels (it learns its vocab or its number of points there), or
from a run's record; after that it is immutable. Every layer asks it instead of switching on the kind's name:
the data layer for encoded values and the item-frame target, the trainer for the default loss and the soft
targets of MixUp, the evaluation for the activation, its inverse, TTA frames, prediction columns and the reports.
Adding a kind means one new module with a subclass, and its line in `imgcls.targets.TARGETS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
import torch

from imgcls.errors import DataError, ImgclsError
from imgcls.report.console import Console
from imgcls.report.plots import plot_reliability
from imgcls.targets.calibration import Calibration, CalibrationFit, reliability_bins


class PointWindow(Protocol):
    """The item transform's window (imgcls.data.item_tfms.Window): how points move from source to item frame."""

    @property
    def box(self) -> tuple[float, float, float, float]: ...

    def map_points(self, points: np.ndarray, size: tuple[int, int]) -> np.ndarray: ...


class Frames(Protocol):
    """The batch geometry an image was resampled with (imgcls.augment.pipeline.BatchGeometry)."""

    def to_input(self, points: torch.Tensor) -> torch.Tensor: ...

    def to_output(self, points: torch.Tensor) -> torch.Tensor: ...


# A decision threshold on probabilities: one for every label, or one per label in vocab order (multi-label).
Threshold = float | tuple[float, ...]


def threshold_text(thresh: Threshold, vocab: Sequence[str] = ()) -> str:
    """'0.4', or 'circle 0.275, cross 0.5' for per-label thresholds (3 significant digits: the sweep's steps)."""
    if isinstance(thresh, tuple):
        names = list(vocab) or [f"label_{i + 1}" for i in range(len(thresh))]
        return ", ".join(f"{name} {value:.3g}" for name, value in zip(names, thresh, strict=True))
    return f"{thresh:.3g}"


def label_vector(thresh: Threshold, n_labels: int) -> np.ndarray:
    """A threshold as one value per label (a single one repeated); a per-label one must have n_labels values."""
    values = np.asarray(thresh, dtype=np.float64).reshape(-1)
    if values.size == 1:
        return np.full(n_labels, float(values[0]))
    if values.size != n_labels:
        raise ValueError(f"{values.size} thresholds for {n_labels} labels")
    return values


@dataclass(frozen=True)
class ShownResult:
    """One validation prediction next to its truth (show-results): a title, whether it is right (None where
    right and wrong are a matter of degree), and (x, y) pixel sets to draw on the model's view (true, predicted)."""

    title: str
    correct: bool | None = None
    points: list[np.ndarray] | None = None


@dataclass(frozen=True)
class EncodedTargets:
    """The fitted target block and one encoded value per item (in item order)."""

    target: Target
    # category: (N,) int64 class index; multi_category: (N, C) float32 one-hot; regression: (N, k) float32;
    # point: (N, n, 2) float32 pixel coordinates, scaled to [-1, 1] per image once its size is known.
    values: np.ndarray


@dataclass
class Evaluated:
    """A model's pass over the validation items, in item order, and what the reports need besides.

    `images(positions)` gives those items as the model saw them (HWC uint8, or HW for grey inputs);
    `to_source(points)` maps (N, P, 2) points of the model's input frame to pixels of the original images and
    `stored` holds the items' encoded values before any transform (pixels for points): only points use them.
    """

    outputs: torch.Tensor  # raw model outputs (N, n_out)
    targets: torch.Tensor  # encoded targets as the batch transform left them (points moved with the pixels)
    losses: torch.Tensor  # per item
    names: list[str]  # item paths relative to the data root
    input_size: tuple[int, int] | None  # (height, width) of the model's input
    thresh: float
    images: Callable[[list[int]], list[np.ndarray]]
    to_source: Callable[[np.ndarray], np.ndarray] | None = None
    stored: np.ndarray | None = None
    source_sizes: list[tuple[int, int]] = field(default_factory=list)
    # What predict and export decide with: `thresh`, or the run's saved per-label thresholds (thresholds.json).
    decision: Threshold | None = None

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class ReportContext:
    """Where a report writes (folder) and prints (console), and how many pictures it draws (k)."""

    evaluated: Evaluated
    folder: Path
    console: Console
    k: int = 9
    min_count: int = 1
    calibration: CalibrationFit | None = None  # fitted on these validation outputs (classifiers)


class Target(ABC):
    """A target kind. Class attributes state its rules; instances hold what encoding learnt from the labels."""

    kind: ClassVar[str]
    default_loss: ClassVar[str]
    losses: ClassVar[tuple[str, ...]]
    metrics: ClassVar[tuple[str, ...]]
    # Activated outputs are probabilities (TTA's --use-max, thresholds and calibration apply).
    probabilities: ClassVar[bool] = False
    # How raw outputs become what `activation` returns, by name (an export's preprocess.json states it).
    activation_name: ClassVar[str] = "identity"
    # Targets are positions in the image and move with the item window and the batch geometry.
    spatial: ClassVar[bool] = False
    # Decisions take one threshold per output (interpret --save-thresholds, export --thresh label=value).
    per_label_thresholds: ClassVar[bool] = False
    # How `fit_calibration` maps raw outputs (imgcls.targets.calibration.Method); None: not applicable.
    calibration_method: ClassVar[str | None] = None
    # train.loss keys this kind's losses accept besides name, eps and gamma (class_weights, pos_weight, alpha).
    loss_options: ClassVar[tuple[str, ...]] = ()
    # The train.loss key that holds this kind's loss weights, one per output, if it has any; and its rule.
    weight_option: ClassVar[str | None] = None
    weight_rule: ClassVar[str] = ""
    # data.sampler: balanced can draw this kind's classes equally often.
    can_balance: ClassVar[bool] = False

    @property
    @abstractmethod
    def n_out(self) -> int:
        """Model outputs."""

    @property
    def vocab(self) -> tuple[str, ...]:
        return ()

    @property
    def n_points(self) -> int:
        return 0

    @classmethod
    @abstractmethod
    def encode(cls, labels: list[Any], train: np.ndarray, valid: np.ndarray) -> EncodedTargets:
        """Fit the block on the training labels and encode every item's raw label."""

    @classmethod
    @abstractmethod
    def from_record(cls, n_out: int, vocab: Sequence[str], n_points: int) -> Target:
        """The block as a run's record stores it."""

    def to_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_out": self.n_out, "vocab": list(self.vocab), "n_points": self.n_points}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Target) and self.to_record() == other.to_record()

    def __hash__(self) -> int:
        return hash((self.kind, self.n_out, self.vocab, self.n_points))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_record()})"

    # --- data --------------------------------------------------------------------------------------------

    def item_target(self, value: np.ndarray, size: tuple[int, int], window: PointWindow | None) -> np.ndarray:
        """An item's encoded value once its image of `size` (width, height) went through `window`."""
        return np.asarray(value)

    def class_counts(self, values: np.ndarray) -> dict[str, int]:
        """Items per class (or label) among encoded `values`; empty for targets without classes."""
        return {}

    def describe(self) -> str:
        """One line for `imgcls summary`: what the model predicts."""
        return f"{self.n_out} output(s)"

    def label_text(self, value: np.ndarray | torch.Tensor) -> str:
        """An encoded target in words (show-batch titles, summary)."""
        return ", ".join(f"{v:.3g}" for v in np.asarray(value, dtype=np.float64).reshape(-1).tolist())

    # --- training ----------------------------------------------------------------------------------------

    def soft_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Targets as floats that can be blended (MixUp, CutMix); class indices become one-hot rows."""
        return targets.float()

    def loss_weights(self, values: np.ndarray) -> np.ndarray:
        """`weight_option: auto`: one loss weight per output from the encoded training `values` (weight_rule)."""
        raise ImgclsError(f"{self.kind} targets have no loss weights", hint="remove class_weights / pos_weight")

    def balancing_weights(self, values: np.ndarray) -> np.ndarray:
        """Per item of the encoded training `values`: its relative chance of being drawn by data.sampler:
        balanced, so that every class is drawn equally often."""
        raise ImgclsError(
            f"data.sampler: balanced needs single-label classes; this run predicts {self.kind} targets",
            hint="use data.sampler: random",
        )

    # --- evaluation --------------------------------------------------------------------------------------

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        """Raw outputs -> what a person reads (probabilities, or the values themselves)."""
        return outputs.float()

    def inverse_activation(self, values: torch.Tensor) -> torch.Tensor:
        """Activated values -> outputs that activate back to them (so the loss and metrics apply to blends)."""
        return values

    def to_frame(self, values: torch.Tensor, source: Frames, target: Frames) -> torch.Tensor:
        """Activated values of images resampled by `source` -> as if resampled by `target` (TTA of points)."""
        return values

    def decide(self, values: np.ndarray, thresh: Threshold) -> np.ndarray:
        """The decision per item: class index (category), 0/1 per label (multi-label), values otherwise."""
        return values

    def prediction_columns(self, top_k: int) -> list[str]:
        return [f"value_{number}" for number in range(1, self.n_out + 1)]

    def prediction_row(
        self,
        values: np.ndarray,
        points: np.ndarray | None,
        size: tuple[int, int] | None,
        top_k: int,
        thresh: Threshold,
    ) -> dict[str, object]:
        """The CSV columns of one prediction (activated `values`; `points` in original pixels for points)."""
        return {f"value_{number}": float(v) for number, v in enumerate(values, start=1)}

    def prediction_text(self, row: dict[str, Any]) -> str:
        """One prediction row in words, for the console."""
        return ", ".join(f"{row[c]:.4g}" for c in self.prediction_columns(1) if c in row)

    def strata(self, values: np.ndarray) -> np.ndarray:
        """One integer per item of encoded `values`: the groups cross-validation folds are stratified by."""
        raise ImgclsError(
            f"cross-validated label audits need a classifier; this spec predicts {self.kind} targets",
            hint="audit the labels of a category or multi_category spec",
        )

    def label_quality(
        self, probs: np.ndarray, targets: np.ndarray, thresh: Threshold
    ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        """Confident learning on out-of-sample probabilities: per item cleanlab's label quality score (lower:
        more doubtful), whether cleanlab flags the label, the given label and the model's in words."""
        raise ImgclsError(
            f"suspect labels need a classifier; this run predicts {self.kind} targets",
            hint="rank the labels of a category or multi_category run",
        )

    def require_per_label(self, what: str) -> None:
        """Stop with a clear error where `what` (an option) asks for per-label thresholds this kind has not."""
        if not self.per_label_thresholds:
            raise ImgclsError(
                f"{what}: per-label thresholds are for multi-label models; this run predicts {self.kind} targets",
                hint="leave it out (a classifier decides by the largest probability)",
            )

    def choose_thresholds(self, evaluated: Evaluated) -> tuple[tuple[float, ...], str]:
        """One decision threshold per label chosen on the validation set, and how they were chosen."""
        self.require_per_label("choosing thresholds")
        raise NotImplementedError

    # --- calibration and abstention ---------------------------------------------------------------------

    def fit_calibration(self, outputs: torch.Tensor, targets: torch.Tensor) -> CalibrationFit:
        """Fit this kind's calibration on validation outputs and measure it (ECE, NLL) before and after."""
        raise ImgclsError(
            f"calibration needs a classifier; this run predicts {self.kind} targets",
            hint="calibrate a category or multi_category run",
        )

    def withheld_columns(self) -> list[str]:
        """Columns `withhold` adds in front of the prediction columns."""
        return []

    def withhold(
        self, row: dict[str, object], values: np.ndarray, min_confidence: float, thresh: Threshold
    ) -> dict[str, object]:
        """A prediction row with what is less probable than `min_confidence` withheld (predict --min-confidence);
        `values` are the activated outputs the row was made from, `thresh` its decision threshold."""
        raise ImgclsError(
            f"--min-confidence needs a classifier; this model predicts {self.kind} targets",
            hint="leave --min-confidence out for point and regression models",
        )

    # --- reports -----------------------------------------------------------------------------------------

    def show_results(self, evaluated: Evaluated, positions: Sequence[int]) -> list[ShownResult]:
        """show-results: each chosen validation prediction next to its truth (activated values as they are)."""
        values = self.activation(evaluated.outputs).numpy().reshape(len(evaluated), -1)
        actual = evaluated.targets.float().numpy().reshape(len(evaluated), -1)

        def text(row: np.ndarray) -> str:
            return ", ".join(f"{v:.3g}" for v in row)

        return [ShownResult(f"actual {text(actual[p])}\npredicted {text(values[p])}") for p in positions]

    @abstractmethod
    def training_report(self, ctx: ReportContext) -> tuple[list[str], list[str]]:
        """The closing lines of `imgcls train` for the best checkpoint, and the files written to ctx.folder."""

    @abstractmethod
    def interpret(self, ctx: ReportContext) -> list[str]:
        """`imgcls interpret`: print the kind's report and write its files; returns the file names written."""


@dataclass(frozen=True, eq=False)
class VocabTarget(Target):
    """A target over a vocab of names (classes or labels): one output per name, activated to probabilities."""

    classes: tuple[str, ...]

    probabilities = True

    @property
    def n_out(self) -> int:
        return len(self.classes)

    @property
    def vocab(self) -> tuple[str, ...]:
        return self.classes

    @classmethod
    def from_record(cls, n_out: int, vocab: Sequence[str], n_points: int) -> VocabTarget:
        return cls(tuple(vocab))

    # --- calibration: the kind's map, loss and bins; the fit, its measurement and its report are shared ------

    # What one reliability bin holds, in words (the axis of the diagram and the ECE line).
    reliability_text: ClassVar[str] = ""

    @abstractmethod
    def _fit_map(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[Calibration, str]:
        """The kind's calibration map, fitted on validation outputs, and a note when the fit is degenerate."""

    @abstractmethod
    def _nll(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """The mean negative log-likelihood of the targets under the activated outputs."""

    @abstractmethod
    def _ece(self, probs: torch.Tensor, targets: torch.Tensor) -> float:
        """The expected calibration error of activated outputs (15 equal-width bins)."""

    @abstractmethod
    def _reliability(self, probs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(confidence, outcome) per binned value: what the reliability bins average."""

    def fit_calibration(self, outputs: torch.Tensor, targets: torch.Tensor) -> CalibrationFit:
        if len(outputs) < 2 or not bool(torch.isfinite(outputs).all()):
            raise ImgclsError(
                f"calibration needs at least 2 validation items with finite outputs, got {len(outputs)}",
                hint="validate on more items (data.split)",
            )
        calibration, note = self._fit_map(outputs, targets)
        calibrated = calibration.apply(outputs)
        before, after = self.activation(outputs), self.activation(calibrated)
        return CalibrationFit(
            calibration=calibration,
            n_items=len(outputs),
            ece_before=self._ece(before, targets),
            ece_after=self._ece(after, targets),
            nll_before=self._nll(outputs, targets),
            nll_after=self._nll(calibrated, targets),
            bins_before=reliability_bins(*self._reliability(before, targets)),
            bins_after=reliability_bins(*self._reliability(after, targets)),
            what=self.reliability_text,
            note=note,
        )

    def _calibration_report(self, ctx: ReportContext) -> list[str]:
        """Print the fitted calibration and write calibration.csv and reliability.png; returns the files."""
        fit = ctx.calibration
        if fit is None:
            return []
        bins = pd.concat([fit.bins_before.assign(calibrated=False), fit.bins_after.assign(calibrated=True)])
        columns = ["calibrated", "bin", "lower", "upper", "count", "confidence", "accuracy", "gap"]
        bins[columns].to_csv(ctx.folder / "calibration.csv", index=False, float_format="%.6f")
        plot_reliability(
            fit.bins_before, fit.bins_after, (fit.ece_before, fit.ece_after), fit.what, ctx.folder / "reliability.png"
        )
        ctx.console.info(f"calibration fitted on the {fit.n_items} validation items: {fit.calibration.describe()}")
        if fit.note:
            ctx.console.warn(fit.note)
        ctx.console.info(
            f"  ECE ({len(fit.bins_before)} bins, {fit.what}) {fit.ece_before:.4f} -> {fit.ece_after:.4f}; "
            f"NLL {fit.nll_before:.4f} -> {fit.nll_after:.4f} (measured on the items it was fitted on)"
        )
        return ["calibration.csv", "reliability.png"]


# --- shared helpers ---------------------------------------------------------------------------------------------


def unknown_labels_error(unknown: Counter[str], vocab: Sequence[str]) -> DataError:
    listed = ", ".join(f"'{label}' ({count})" for label, count in unknown.most_common(5))
    return DataError(
        f"validation labels that no training item has: {listed}",
        hint=f"the vocab comes from the training set ({len(vocab)} labels); change the split so every label "
        "appears in training, or remove those items",
    )


def float_rows(labels: list[Any], what: str) -> np.ndarray:
    """Labels as an (N, k) float32 array of finite numbers, every row the same length."""
    try:
        rows = [np.asarray(label, dtype=np.float32).reshape(-1) for label in labels]
    except (TypeError, ValueError) as err:
        raise DataError(f"{what} targets must be numbers: {err}") from None
    sizes = Counter(len(row) for row in rows)
    if len(sizes) > 1:
        raise DataError(f"{what} targets have different lengths: {dict(sizes)} (length: count)")
    values = np.stack(rows)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).any(axis=1).sum())
        raise DataError(f"{bad} {what} targets are NaN or infinite", hint="fix or drop those rows")
    return values


def top_losses(losses: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the k largest losses, largest first (ties: the earlier item first)."""
    k = min(k, len(losses))
    order = torch.sort(losses, descending=True, stable=True).indices
    return order[:k]


def grid_columns(n: int) -> int:
    """Columns of a near-square picture grid of n images."""
    return max(1, int(np.ceil(np.sqrt(n))))
