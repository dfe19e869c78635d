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
import torch

from imgcls.errors import DataError, ImgclsError
from imgcls.report.console import Console


class PointWindow(Protocol):
    """The item transform's window (imgcls.data.item_tfms.Window): how points move from source to item frame."""

    @property
    def box(self) -> tuple[float, float, float, float]: ...

    def map_points(self, points: np.ndarray, size: tuple[int, int]) -> np.ndarray: ...


class Frames(Protocol):
    """The batch geometry an image was resampled with (imgcls.augment.pipeline.BatchGeometry)."""

    def to_input(self, points: torch.Tensor) -> torch.Tensor: ...

    def to_output(self, points: torch.Tensor) -> torch.Tensor: ...


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

    def decide(self, values: np.ndarray, thresh: float) -> np.ndarray:
        """The decision per item: class index (category), 0/1 per label (multi-label), values otherwise."""
        return values

    def prediction_columns(self, top_k: int) -> list[str]:
        return [f"value_{number}" for number in range(1, self.n_out + 1)]

    def prediction_row(
        self, values: np.ndarray, points: np.ndarray | None, size: tuple[int, int] | None, top_k: int, thresh: float
    ) -> dict[str, object]:
        """The CSV columns of one prediction (activated `values`; `points` in original pixels for points)."""
        return {f"value_{number}": float(v) for number, v in enumerate(values, start=1)}

    def prediction_text(self, row: dict[str, Any]) -> str:
        """One prediction row in words, for the console."""
        return ", ".join(f"{row[c]:.4g}" for c in self.prediction_columns(1) if c in row)

    def label_quality(
        self, probs: np.ndarray, targets: np.ndarray, thresh: float
    ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        """Confident learning on out-of-sample probabilities: per item cleanlab's label quality score (lower:
        more doubtful), whether cleanlab flags the label, the given label and the model's in words."""
        raise ImgclsError(
            f"suspect labels need a classifier; this run predicts {self.kind} targets",
            hint="rank the labels of a category or multi_category run",
        )

    # --- reports -----------------------------------------------------------------------------------------

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
