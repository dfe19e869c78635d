"""Regression: k continuous values per image (fastai's RegressionBlock)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgcls.report.plots import image_grid, plot_predicted_vs_actual
from imgcls.targets.base import EncodedTargets, ReportContext, Target, float_rows, grid_columns


def regression_report(predicted: np.ndarray, actual: np.ndarray) -> pd.DataFrame:
    """Per target of (N, k) values: MAE, RMSE, bias (mean of predicted - actual) and R² (1 - SSE / SST; 0 where
    the actual values are constant, because no model beats the mean there)."""
    error = predicted - actual
    sse = (error**2).sum(axis=0)
    sst = ((actual - actual.mean(axis=0)) ** 2).sum(axis=0)
    r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), 0.0)
    report: pd.DataFrame = pd.DataFrame(
        {
            "target": [f"value_{number + 1}" for number in range(actual.shape[1])],
            "mae": np.abs(error).mean(axis=0),
            "rmse": np.sqrt((error**2).mean(axis=0)),
            "bias": error.mean(axis=0),
            "r2": r2,
        }
    )
    return report


@dataclass(frozen=True, eq=False)
class Regression(Target):
    """`width` values per image, predicted as they are (a y_range squashes them into an interval)."""

    width: int

    kind = "regression"
    default_loss = "mse"
    losses = ("mse", "l1")
    metrics = ("rmse", "mae")

    @property
    def n_out(self) -> int:
        return self.width

    @classmethod
    def encode(cls, labels: list[Any], train: np.ndarray, valid: np.ndarray) -> EncodedTargets:
        values = float_rows(labels, "regression")
        return EncodedTargets(cls(values.shape[1]), values)

    @classmethod
    def from_record(cls, n_out: int, vocab: Sequence[str], n_points: int) -> Regression:
        return cls(n_out)

    def describe(self) -> str:
        return f"{self.width} float(s) per image"

    def _values(self, ctx: ReportContext) -> tuple[np.ndarray, np.ndarray]:
        evaluated = ctx.evaluated
        n = len(evaluated)
        predicted = self.activation(evaluated.outputs).numpy().reshape(n, -1)
        return predicted, evaluated.targets.float().numpy().reshape(n, -1)

    def training_report(self, ctx: ReportContext) -> tuple[list[str], list[str]]:
        predicted, actual = self._values(ctx)
        report = regression_report(predicted, actual)
        baseline = np.abs(actual - actual.mean(axis=0)).mean()
        lines = [
            f"{row['target']}: MAE {row['mae']:.4g}, RMSE {row['rmse']:.4g}, R² {row['r2']:.4f}"
            for _, row in report.iterrows()
        ]
        lines.append(f"baseline: predicting the validation mean gives MAE {baseline:.4g}")
        return lines, []

    def interpret(self, ctx: ReportContext) -> list[str]:
        evaluated, console = ctx.evaluated, ctx.console
        predicted, actual = self._values(ctx)
        report = regression_report(predicted, actual)
        report.to_csv(ctx.folder / "regression.csv", index=False, float_format="%.4f")
        for _, row in report.iterrows():
            console.info(
                f"{row['target']}: MAE {row['mae']:.4g}, RMSE {row['rmse']:.4g}, bias {row['bias']:+.4g}, "
                f"R² {row['r2']:.4f}"
            )
        console.info(
            f"baseline: predicting the validation mean gives MAE {np.abs(actual - actual.mean(axis=0)).mean():.4g}"
        )
        errors = np.abs(predicted - actual).mean(axis=1)
        frame = pd.DataFrame({"item": evaluated.names, "abs_error": errors})
        for number in range(actual.shape[1]):
            frame[f"value_{number + 1}"] = predicted[:, number]
            frame[f"true_value_{number + 1}"] = actual[:, number]
        frame.sort_values("abs_error", ascending=False, kind="stable").to_csv(
            ctx.folder / "errors.csv", index=False, float_format="%.4f"
        )
        plot_predicted_vs_actual(predicted, actual, ctx.folder / "predicted_vs_actual.png")
        worst = np.argsort(-errors, kind="stable")[: ctx.k].tolist()
        console.info("largest errors (true -> predicted):")
        for position in worst:
            true_text = ", ".join(f"{v:.4g}" for v in actual[position])
            pred_text = ", ".join(f"{v:.4g}" for v in predicted[position])
            console.info(f"  {evaluated.names[position]}: {true_text} -> {pred_text}")
        if worst:
            images = evaluated.images(worst)
            titles = [
                f"{Path(evaluated.names[p]).name}\n{', '.join(f'{v:.3g}' for v in actual[p])} -> "
                f"{', '.join(f'{v:.3g}' for v in predicted[p])}"
                for p in worst
            ]
            image_grid(
                images,
                titles,
                ctx.folder / "largest_errors.png",
                ncols=grid_columns(len(images)),
                suptitle="actual -> predicted",
            )
        return ["regression.csv", "errors.csv", "predicted_vs_actual.png", "largest_errors.png"]
