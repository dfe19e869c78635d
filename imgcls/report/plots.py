"""PNG plots: training curves, confusion matrices, the lr-find curve, image grids, predicted against actual.

matplotlib is imported inside each function with the Agg backend, so importing this module costs nothing and
no display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def stage_starts(frame: pd.DataFrame) -> list[tuple[int, str]]:
    """(row, label) of the first row of each stage in metrics.csv, rows numbered from 1 as in the plot: e.g.
    [(1, 'stage 1: frozen, unfrozen'), (4, 'stage 2: fit_one_cycle')]."""
    stages = frame["stage"].tolist()
    phases = frame["phase"].astype(str).tolist() if "phase" in frame else [""] * len(stages)
    starts: list[tuple[int, str]] = []
    for row, stage in enumerate(stages):
        if row == 0 or stage != stages[row - 1]:
            names = list(dict.fromkeys(p for s, p in zip(stages, phases, strict=True) if s == stage and p))
            starts.append((row + 1, f"stage {stage}: {', '.join(names)}" if names else f"stage {stage}"))
    return starts


def plot_metrics(metrics_csv: Path, out: Path) -> Path:
    """Losses (left) and every other metric (right) per epoch, numbered from 1 over the whole run as the rows of
    metrics.csv; each stage's start is a labelled vertical line."""
    plt = _pyplot()
    frame = pd.read_csv(metrics_csv)
    x = np.arange(1, len(frame) + 1)
    skip = {"stage", "phase", "epoch", "train_loss", "valid_loss", "lr", "seconds"}
    others = [c for c in frame.columns if c not in skip]
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(11 if others else 6, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot(x, frame["train_loss"], marker="o", label="train_loss (smoothed)")
    ax.plot(x, frame["valid_loss"], marker="o", label="valid_loss")
    ax.set_title("loss")
    ax.legend()
    if others:
        for column in others:
            axes[0][1].plot(x, frame[column], marker="o", label=column)
        axes[0][1].set_title("validation metrics")
        axes[0][1].legend()
    starts = stage_starts(frame) if len(frame) else []
    for axis in axes[0]:
        axis.set_xlabel("epoch of the run (row of metrics.csv)")
        axis.set_xticks(x if len(x) <= 20 else np.linspace(1, len(x), 10).round())
        if len(starts) < 2:  # one stage: nothing to tell apart
            continue
        for row, label in starts:
            axis.axvline(row - 0.5, color="grey", linestyle=":")
            axis.text(
                row - 0.4, 0.98, label, transform=axis.get_xaxis_transform(), fontsize=7, va="top", color="dimgrey"
            )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_confusion(matrix: np.ndarray, vocab: Sequence[str], out: Path, normalize: bool = False) -> Path:
    """Rows are actual classes, columns predicted; `normalize` divides each row by its total."""
    plt = _pyplot()
    values = matrix.astype(float)
    if normalize:
        values = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    n = len(vocab)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(n), labels=list(vocab), rotation=90)
    ax.set_yticks(range(n), labels=list(vocab))
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    ax.set_title("Confusion matrix" + (" (row-normalized)" if normalize else ""))
    if n <= 30:
        top = values.max() if values.size else 1
        for i in range(n):
            for j in range(n):
                text = f"{values[i, j]:.2f}" if normalize else f"{int(values[i, j])}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    color="white" if values[i, j] > top / 2 else "black",
                    fontsize=8,
                )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    out: Path,
    points: Sequence[Sequence[np.ndarray]] | None = None,
    ncols: int | None = None,
    suptitle: str | None = None,
    title_colours: Sequence[str] | None = None,
) -> Path:
    """HWC uint8 images in a grid with a title each (in `title_colours`, e.g. green for a right prediction and
    red for a wrong one); `points` draws (x, y) pixel sets (true as o, predicted as x)."""
    plt = _pyplot()
    n = len(images)
    ncols = ncols or min(n, 4)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3.2 * nrows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for index, (image, title) in enumerate(zip(images, titles, strict=True)):
        axis = axes.ravel()[index]
        # A 2-D image is grey: drawn with the grey colormap over the whole 0..255 range, never a false colour.
        axis.imshow(image, cmap="gray", vmin=0, vmax=255) if image.ndim == 2 else axis.imshow(image)
        axis.set_title(title, fontsize=8, color=title_colours[index] if title_colours else "black")
        if points is not None:
            for group, (colour, marker) in zip(points[index], (("lime", "o"), ("red", "x")), strict=False):
                axis.scatter(group[:, 0], group[:, 1], c=colour, marker=marker, s=40)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], suggestions: Sequence[Any], out: Path) -> Path:
    """The smoothed loss against the learning rate (log scale), each suggestion marked where fastai marks it
    and labelled with its value."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, losses, color="tab:blue", linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    ax.set_title("lr-find")
    finite = np.array([v for v in losses if np.isfinite(v)])
    if len(finite):
        # Show the rise after the minimum up to the level the curve started from, not the whole divergent tail.
        # (the first tenth is skipped when finding the minimum, as the suggestions skip it: one batch is noise)
        skip = len(finite) // 10
        lowest = skip + int(finite[skip:].argmin())
        low = float(finite.min())
        top = min(float(finite.max()), float(finite[: lowest + 1].max()) * 1.1)
        margin = 0.05 * max(top - low, 1e-3)
        ax.set_ylim(low - margin, top + margin)
    markers = ("o", "s", "^", "D", "v", "P")
    colours = ("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink")
    for index, suggestion in enumerate(suggestions):
        if not np.isfinite(suggestion.lr):
            continue
        x, y = suggestion.point
        colour = colours[index % len(colours)]
        ax.axvline(suggestion.lr, color=colour, linestyle=":", linewidth=1)
        ax.plot(
            x,
            y,
            marker=markers[index % len(markers)],
            color=colour,
            linestyle="none",
            markersize=8,
            label=f"{suggestion.name}: {suggestion.lr:.2e}"
            + ("" if np.isclose(x, suggestion.lr) else f" (marked lr / {x / suggestion.lr:.3g})"),
        )
    if suggestions:
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_threshold_sweep(
    thresholds: np.ndarray, accuracies: np.ndarray, current: float, out: Path, metric: str = "accuracy_multi"
) -> Path:
    """A metric against the decision threshold, with the best threshold and the run's own marked."""
    plt = _pyplot()
    values = np.asarray(accuracies, dtype=float)
    best = int(values.argmax())
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(thresholds, values, marker=".", color="tab:blue")
    ax.axvline(
        thresholds[best], color="tab:green", linestyle="--", label=f"best {thresholds[best]:.3g}: {values[best]:.4f}"
    )
    ax.axvline(current, color="tab:grey", linestyle=":", label=f"run's threshold {current:.3g}")
    ax.set_xlabel("threshold (on the sigmoid)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against the threshold")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_predicted_vs_actual(predicted: np.ndarray, actual: np.ndarray, out: Path) -> Path:
    """One scatter per target of (N, k) values, with the diagonal a perfect model would sit on."""
    plt = _pyplot()
    k = actual.shape[1]
    fig, axes = plt.subplots(1, k, figsize=(4.2 * k, 4.2), squeeze=False)
    for number, axis in enumerate(axes.ravel()):
        x, y = actual[:, number], predicted[:, number]
        low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        axis.plot([low, high], [low, high], color="tab:grey", linestyle="--", linewidth=1, label="predicted = actual")
        axis.scatter(x, y, s=14, alpha=0.7, color="tab:blue")
        axis.set_xlabel(f"actual value_{number + 1}")
        axis.set_ylabel(f"predicted value_{number + 1}")
        axis.legend(loc="upper left", fontsize=8)
    fig.suptitle("validation: predicted against actual")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_reliability(
    before: pd.DataFrame, after: pd.DataFrame, eces: tuple[float, float], what: str, out: Path
) -> Path:
    """Reliability diagrams before and after calibration: per confidence bin the share that came true (bars)
    against the mean confidence (a perfectly calibrated model's bars reach the diagonal), with the items per bin
    underneath. `before`/`after` are imgcls.targets.calibration.reliability_bins tables."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, squeeze=False)
    for column, (bins, title, ece) in enumerate(((before, "before", eces[0]), (after, "after", eces[1]))):
        top, bottom = axes[0][column], axes[1][column]
        width = bins["upper"] - bins["lower"]
        filled = bins["count"] > 0
        accuracy = bins["accuracy"].where(filled, 0.0)
        confidence = bins["confidence"].where(filled, 0.0)
        top.bar(
            bins["lower"], accuracy, width=width, align="edge", color="tab:blue", edgecolor="white", label="observed"
        )
        top.bar(
            bins["lower"],
            (confidence - accuracy).abs(),
            bottom=np.minimum(accuracy, confidence),
            width=width,
            align="edge",
            color="none",
            hatch="///",
            edgecolor="tab:red",
            linewidth=0.8,
            label="gap to the mean confidence",
        )
        top.plot([0, 1], [0, 1], color="tab:grey", linestyle="--", linewidth=1)
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("share that came true")
        top.set_title(f"{title} calibration: ECE {ece:.4f}")
        top.legend(loc="upper left", fontsize=8)
        bottom.bar(bins["lower"], bins["count"], width=width, align="edge", color="tab:grey", edgecolor="white")
        bottom.set_yscale("symlog", linthresh=1)
        bottom.set_xlabel(what)
        bottom.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
