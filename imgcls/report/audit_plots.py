"""PNG plots of `imgcls audit`: duplicate pairs side by side, image sizes and aspect ratios, class counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.report.plots import _pyplot

_SPLIT_COLOURS = {"train": "tab:blue", "valid": "tab:orange"}
_PIXEL_TICKS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
_ASPECT_TICKS = (0.1, 0.2, 0.25, 0.33, 0.5, 0.67, 0.75, 1.0, 1.33, 1.5, 2.0, 3.0, 4.0, 5.0, 10.0)


def _plain_log_ticks(axis: Any, ticks: Sequence[float], low: float, high: float) -> None:
    """Readable ticks on a log axis: the given values within [low, high], written as plain numbers."""
    chosen = [t for t in ticks if low <= t <= high] or [low, high]
    axis.set_ticks(chosen, labels=[f"{t:g}" for t in chosen])
    axis.set_minor_locator(_pyplot().NullLocator())


@dataclass(frozen=True)
class ShownPair:
    """Two images to compare, a title under each (split/label), and a caption for the pair."""

    first: np.ndarray
    second: np.ndarray
    first_title: str
    second_title: str
    caption: str
    alarm: bool = False  # drawn in red: a leak between the splits


def plot_duplicate_pairs(pairs: Sequence[ShownPair], out: Path, ncols: int = 2) -> Path:
    """Each pair in its own panel: the two images side by side, their titles, the caption above them."""
    plt = _pyplot()
    ncols = max(1, min(ncols, len(pairs)))
    nrows = max(1, -(-len(pairs) // ncols))
    fig = plt.figure(figsize=(5.2 * ncols, 3.1 * nrows))
    panels = np.atleast_1d(fig.subfigures(nrows, ncols, squeeze=False).ravel())
    for panel, pair in zip(panels, pairs, strict=False):
        axes = panel.subplots(1, 2)
        for axis, image, title in zip(
            axes, (pair.first, pair.second), (pair.first_title, pair.second_title), strict=True
        ):
            axis.imshow(image)
            axis.set_title(title, fontsize=8)
            axis.axis("off")
        panel.suptitle(pair.caption, fontsize=9, color="tab:red" if pair.alarm else "black")
    if not pairs:
        fig.text(0.5, 0.5, "no duplicates found", ha="center", va="center")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_sizes(widths: np.ndarray, heights: np.ndarray, splits: Sequence[str], tiny_px: int, out: Path) -> Path:
    """Width against height per split (log axes, the tiny limit dashed) and a histogram of aspect ratios."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.3))
    split_array = np.asarray(splits)
    for name, colour in _SPLIT_COLOURS.items():
        chosen = split_array == name
        if chosen.any():
            left.scatter(
                widths[chosen], heights[chosen], s=8, alpha=0.5, color=colour, label=f"{name} ({chosen.sum()})"
            )
    left.axvline(tiny_px, color="tab:red", linestyle="--", linewidth=1, label=f"{tiny_px} px (tiny below)")
    left.axhline(tiny_px, color="tab:red", linestyle="--", linewidth=1)
    left.set_xscale("log")
    left.set_yscale("log")
    top = float(max(widths.max(initial=1.0), heights.max(initial=1.0)))
    low = float(min(widths.min(initial=tiny_px), heights.min(initial=tiny_px), tiny_px))
    left.set_xlim(low * 0.8, top * 1.25)
    left.set_ylim(low * 0.8, top * 1.25)
    _plain_log_ticks(left.xaxis, _PIXEL_TICKS, low * 0.8, top * 1.25)
    _plain_log_ticks(left.yaxis, _PIXEL_TICKS, low * 0.8, top * 1.25)
    left.set_xlabel("width (px, after EXIF)")
    left.set_ylabel("height (px)")
    left.set_title("image sizes")
    left.legend(loc="best", fontsize=8)
    aspect = widths / np.maximum(heights, 1)
    if len(aspect):
        bins = np.geomspace(max(aspect.min(), 1e-3) * 0.95, aspect.max() * 1.05, 40)
        right.hist(aspect, bins=bins, color="tab:grey")
        right.set_xscale("log")
        _plain_log_ticks(right.xaxis, _ASPECT_TICKS, float(bins[0]), float(bins[-1]))
    right.axvline(1.0, color="black", linestyle=":", linewidth=1, label="square")
    right.set_xlabel("aspect ratio (width / height)")
    right.set_ylabel("images")
    right.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
    right.set_title("aspect ratios")
    right.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_class_counts(train: dict[str, int], valid: dict[str, int], out: Path) -> Path:
    """Horizontal bars per class, training and validation side by side, with the counts written on them."""
    plt = _pyplot()
    names = list(train)
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.32 * len(names) + 1.4)))
    height = 0.4
    for offset, (split, counts) in zip((-height / 2, height / 2), (("train", train), ("valid", valid)), strict=True):
        values = [counts.get(name, 0) for name in names]
        bars = ax.barh(y + offset, values, height=height, color=_SPLIT_COLOURS[split], label=split)
        if len(names) <= 40:
            ax.bar_label(bars, padding=2, fontsize=7)
    ax.set_yticks(y, labels=names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("items")
    ax.set_title("items per class")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.margins(x=0.12)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


__all__ = ["ShownPair", "plot_class_counts", "plot_duplicate_pairs", "plot_sizes"]
