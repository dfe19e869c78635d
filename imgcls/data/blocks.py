"""Target blocks: turn raw labels into tensors the loss understands, and back into words and pixels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imgcls.data.splits import SplitIndices
from imgcls.errors import DataError


@dataclass(frozen=True)
class TargetInfo:
    """What the model predicts; stored with every run so that predictions can be decoded without the data."""

    kind: str  # category | multi_category | point | regression
    n_out: int
    vocab: list[str] = field(default_factory=list)
    n_points: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_out": self.n_out, "vocab": self.vocab, "n_points": self.n_points}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TargetInfo:
        return cls(raw["kind"], int(raw["n_out"]), list(raw.get("vocab", [])), int(raw.get("n_points", 0)))


@dataclass(frozen=True)
class EncodedTargets:
    info: TargetInfo
    # category: (N,) int64 class index; multi_category: (N, C) float32 one-hot; regression: (N, k) float32;
    # point: (N, n, 2) float32 pixel coordinates, scaled to [-1, 1] per image once its size is known.
    values: np.ndarray


def _unknown_labels_error(unknown: Counter[str], vocab: Sequence[str]) -> DataError:
    listed = ", ".join(f"'{label}' ({count})" for label, count in unknown.most_common(5))
    return DataError(
        f"validation labels that no training item has: {listed}",
        hint=f"the vocab comes from the training set ({len(vocab)} labels); change the split so every label "
        "appears in training, or remove those items",
    )


def _category(labels: list[Any], split: SplitIndices) -> EncodedTargets:
    if any(isinstance(label, list | tuple | np.ndarray) for label in labels):
        raise DataError(
            "labels are lists, but the target block is 'category'",
            hint="use blocks: [image, multi_category] for several labels per image",
        )
    text = [str(label) for label in labels]
    vocab = sorted({text[i] for i in split.train})
    lookup = {label: index for index, label in enumerate(vocab)}
    unknown = Counter(text[i] for i in split.valid if text[i] not in lookup)
    if unknown:
        raise _unknown_labels_error(unknown, vocab)
    if len(vocab) < 2:
        raise DataError(f"only one class in the training set ('{vocab[0]}'); a classifier needs at least two")
    values = np.array([lookup.get(label, -1) for label in text], dtype=np.int64)
    return EncodedTargets(TargetInfo("category", len(vocab), vocab), values)


def _multi_category(labels: list[Any], split: SplitIndices) -> EncodedTargets:
    if any(isinstance(label, str) for label in labels):
        raise DataError(
            "labels are single strings, but the target block is 'multi_category'",
            hint="split them into lists: for a CSV column set data.labels.delimiter (e.g. ' ')",
        )
    lists = [[str(x) for x in label] for label in labels]
    vocab = sorted({x for i in split.train for x in lists[i]})
    lookup = {label: index for index, label in enumerate(vocab)}
    unknown = Counter(x for i in split.valid for x in lists[i] if x not in lookup)
    if unknown:
        raise _unknown_labels_error(unknown, vocab)
    values = np.zeros((len(lists), len(vocab)), dtype=np.float32)
    for row, label_list in enumerate(lists):
        for label in label_list:
            if label in lookup:
                values[row, lookup[label]] = 1.0
    return EncodedTargets(TargetInfo("multi_category", len(vocab), vocab), values)


def _floats(labels: list[Any], what: str) -> np.ndarray:
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


def _points(labels: list[Any]) -> EncodedTargets:
    values = _floats(labels, "point")
    if values.shape[1] % 2:
        raise DataError(f"point targets have {values.shape[1]} numbers each; points need x y pairs")
    n_points = values.shape[1] // 2
    info = TargetInfo("point", n_points * 2, [], n_points)
    return EncodedTargets(info, values.reshape(len(labels), n_points, 2))


def encode_targets(kind: str, labels: list[Any], split: SplitIndices) -> EncodedTargets:
    """Encode every item's raw label for the target block `kind`; the vocab is sorted training labels."""
    if kind == "category":
        return _category(labels, split)
    if kind == "multi_category":
        return _multi_category(labels, split)
    if kind == "point":
        return _points(labels)
    values = _floats(labels, "regression")
    return EncodedTargets(TargetInfo("regression", values.shape[1]), values)


def scale_points(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixel (x, y) on an image of (width, height) -> [-1, 1]: x = 0 is -1, x = width is +1 (fastai's PointScaler)."""
    scale = np.array([2.0 / size[0], 2.0 / size[1]], dtype=np.float32)
    return (points * scale - 1.0).astype(np.float32)


def unscale_points(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The inverse of scale_points."""
    scale = np.array([size[0] / 2.0, size[1] / 2.0], dtype=np.float32)
    return ((points + 1.0) * scale).astype(np.float32)
