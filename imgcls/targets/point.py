"""Key points: n (x, y) positions per image, scaled to [-1, 1] and moved with the pixels (fastai's PointBlock)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from imgcls.errors import DataError
from imgcls.report.plots import image_grid
from imgcls.targets.base import (
    EncodedTargets,
    Evaluated,
    Frames,
    PointWindow,
    ReportContext,
    ShownResult,
    Target,
    Threshold,
    float_rows,
    grid_columns,
)


def scale_points(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixel (x, y) on an image of (width, height) -> [-1, 1]: x = 0 is -1, x = width is +1 (fastai's PointScaler)."""
    scale = np.array([2.0 / size[0], 2.0 / size[1]], dtype=np.float32)
    return (points * scale - 1.0).astype(np.float32)


def unscale_points(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The inverse of scale_points."""
    scale = np.array([size[0] / 2.0, size[1] / 2.0], dtype=np.float32)
    return ((points + 1.0) * scale).astype(np.float32)


def point_distances(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance per item between (N, P, 2) predicted and actual points."""
    distances: np.ndarray = np.linalg.norm(predicted - actual, axis=-1).mean(axis=-1)
    return distances


def as_points(values: torch.Tensor) -> torch.Tensor:
    """(N, 2P) model outputs -> (N, P, 2) points."""
    return values.reshape(values.shape[0], -1, 2)


@dataclass(frozen=True, eq=False)
class Point(Target):
    """`count` points per image; the model outputs 2 * count values in [-1, 1] (x then y of each point)."""

    count: int

    kind = "point"
    default_loss = "mse"
    losses = ("mse", "l1")
    metrics = ("rmse", "mae")
    spatial = True

    @property
    def n_out(self) -> int:
        return 2 * self.count

    @property
    def n_points(self) -> int:
        return self.count

    @classmethod
    def encode(cls, labels: list[Any], train: np.ndarray, valid: np.ndarray) -> EncodedTargets:
        values = float_rows(labels, "point")
        if values.shape[1] % 2:
            raise DataError(f"point targets have {values.shape[1]} numbers each; points need x y pairs")
        count = values.shape[1] // 2
        return EncodedTargets(cls(count), values.reshape(len(labels), count, 2))

    @classmethod
    def from_record(cls, n_out: int, vocab: Sequence[str], n_points: int) -> Point:
        return cls(n_points)

    def item_target(self, value: np.ndarray, size: tuple[int, int], window: PointWindow | None) -> np.ndarray:
        points = scale_points(value, size)
        return window.map_points(points, size) if window is not None else points

    def describe(self) -> str:
        return f"{self.count} point(s) per image, scaled to [-1, 1] (x = -1 the left edge, +1 the right)"

    def label_text(self, value: np.ndarray | torch.Tensor) -> str:
        return f"{self.count} point(s)"

    def to_frame(self, values: torch.Tensor, source: Frames, target: Frames) -> torch.Tensor:
        # back through the sampling map that made the first frame, forward through the second
        moved = target.to_output(source.to_input(as_points(values)))
        return moved.reshape(values.shape)

    def prediction_columns(self, top_k: int) -> list[str]:
        columns = []
        for number in range(1, self.count + 1):
            columns += [f"x_{number}", f"y_{number}"]
        return [*columns, "width", "height"]

    def prediction_row(
        self,
        values: np.ndarray,
        points: np.ndarray | None,
        size: tuple[int, int] | None,
        top_k: int,
        thresh: Threshold,
    ) -> dict[str, object]:
        if points is None or size is None:
            raise ValueError("point predictions need the points in original pixels and the image size")
        row: dict[str, object] = {}
        for number, (x, y) in enumerate(points, start=1):
            row[f"x_{number}"], row[f"y_{number}"] = float(x), float(y)
        row["width"], row["height"] = size
        return row

    def prediction_text(self, row: dict[str, Any]) -> str:
        text = "  ".join(f"({row[f'x_{i}']:.1f}, {row[f'y_{i}']:.1f})" for i in range(1, self.count + 1))
        return f"{text} px of {row['width']}x{row['height']}"

    # --- reports -----------------------------------------------------------------------------------------

    def _errors(self, ctx: ReportContext) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Predicted and actual points in original pixels, the error per item there and at the model input."""
        evaluated = ctx.evaluated
        if evaluated.to_source is None or evaluated.stored is None:
            raise ValueError("point reports need the map back to the original images")
        predicted = evaluated.to_source(as_points(evaluated.outputs).numpy())
        actual = np.asarray(evaluated.stored, dtype=np.float32)
        height, width = evaluated.input_size or (2, 2)
        half = np.array([width / 2, height / 2], dtype=np.float32)
        at_input = point_distances(as_points(evaluated.outputs).numpy() * half, evaluated.targets.numpy() * half)
        return predicted, actual, point_distances(predicted, actual), at_input

    def _size_text(self, ctx: ReportContext) -> str:
        height, width = ctx.evaluated.input_size or (0, 0)
        return f"{width}x{height}"

    def training_report(self, ctx: ReportContext) -> tuple[list[str], list[str]]:
        _, _, errors, at_input = self._errors(ctx)
        return [
            f"mean point error {errors.mean():.2f} px in the original images (median {np.median(errors):.2f}, "
            f"max {errors.max():.2f}); {at_input.mean():.2f} px at the model input {self._size_text(ctx)}"
        ], []

    def interpret(self, ctx: ReportContext) -> list[str]:
        evaluated, console = ctx.evaluated, ctx.console
        predicted, actual, errors, at_input = self._errors(ctx)
        size_text = self._size_text(ctx)
        frame = pd.DataFrame(
            {
                "item": evaluated.names,
                "error_px": errors,
                f"error_px_at_{size_text}": at_input,
                "width": [s[0] for s in evaluated.source_sizes],
                "height": [s[1] for s in evaluated.source_sizes],
            }
        )
        for number in range(self.count):
            frame[f"x_{number + 1}"] = predicted[:, number, 0]
            frame[f"y_{number + 1}"] = predicted[:, number, 1]
            frame[f"true_x_{number + 1}"] = actual[:, number, 0]
            frame[f"true_y_{number + 1}"] = actual[:, number, 1]
        frame.sort_values("error_px", ascending=False, kind="stable").to_csv(
            ctx.folder / "point_errors.csv", index=False, float_format="%.3f"
        )
        console.info(
            f"mean error {errors.mean():.2f} px in the original images (median {np.median(errors):.2f}, "
            f"max {errors.max():.2f}); {at_input.mean():.2f} px at the model's input size {size_text}"
        )
        worst = np.argsort(-errors, kind="stable")[: ctx.k].tolist()
        console.info("largest errors (original pixels, true -> predicted):")
        for position in worst:
            true_text = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in actual[position])
            pred_text = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in predicted[position])
            console.info(f"  {evaluated.names[position]}: {errors[position]:.1f} px, {true_text} -> {pred_text}")
        if worst:
            self._draw(ctx, worst, errors)
        return ["point_errors.csv", "largest_errors.png"]

    def _view_points(self, evaluated: Evaluated, position: int, shape: tuple[int, ...]) -> list[np.ndarray]:
        """The true and the predicted points of one item in pixels of the model's view of it (of `shape`, height
        and width first)."""
        scale = np.array([shape[1] / 2, shape[0] / 2], dtype=np.float32)
        true_px = (evaluated.targets[position].numpy() + 1) * scale
        pred_px = (as_points(evaluated.outputs[position : position + 1])[0].numpy() + 1) * scale
        return [true_px, pred_px]

    def show_results(self, evaluated: Evaluated, positions: Sequence[int]) -> list[ShownResult]:
        shape = evaluated.input_size or evaluated.images([positions[0]])[0].shape[:2]
        half = np.array([shape[1] / 2, shape[0] / 2], dtype=np.float32)
        errors = point_distances(as_points(evaluated.outputs).numpy() * half, evaluated.targets.numpy() * half)
        return [
            ShownResult(
                f"{Path(evaluated.names[p]).name}\nerror {errors[p]:.1f} px (model input)",
                None,
                self._view_points(evaluated, p, shape),
            )
            for p in positions
        ]

    def _draw(self, ctx: ReportContext, worst: list[int], errors: np.ndarray) -> None:
        evaluated = ctx.evaluated
        images = evaluated.images(worst)
        drawn = [self._view_points(evaluated, p, image.shape) for p, image in zip(worst, images, strict=True)]
        titles = [f"{Path(evaluated.names[p]).name}\nerror {errors[p]:.1f} px (original)" for p in worst]
        image_grid(
            images,
            titles,
            ctx.folder / "largest_errors.png",
            drawn,
            grid_columns(len(images)),
            suptitle="true (o) and predicted (x) points",
        )
