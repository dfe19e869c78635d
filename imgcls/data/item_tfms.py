"""Item transforms: on the CPU, per image, the resize that makes a batch collatable (presizing, step 1).

Each transform first plans a `Window` (the source rectangle that becomes the output, in displayed source
pixels) from the source size alone. Planning before decoding lets a JPEG be decoded at a reduced scale that
still covers the window, and gives the exact affine map for point targets. The window is then cut and resized
with ONE PIL resample (`Image.resize(box=...)`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from imgcls.spec.data import ItemTfm, PadMode, RandomResizedCropTfm, ResizeTfm

_NP_PAD_MODE = {"zeros": "constant", "border": "edge", "reflection": "reflect"}
# Pillow: reduce by an integer factor first when the scale is at least this; 3.0 is indistinguishable from a
# plain resample and several times faster for large downscales (Pillow's documentation of reducing_gap).
_REDUCING_GAP = 3.0


@dataclass(frozen=True)
class Window:
    """Source rectangle (left, top, right, bottom) in source pixels -> output (width, height).

    For `pad` the rectangle extends beyond the image; the margin is filled with `pad_mode`.
    """

    box: tuple[float, float, float, float]
    out: tuple[int, int]
    pad_mode: PadMode = "reflection"

    def inside(self, size: tuple[int, int]) -> bool:
        left, top, right, bottom = self.box
        eps = 1e-6
        return left >= -eps and top >= -eps and right <= size[0] + eps and bottom <= size[1] + eps

    def draft_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Smallest decoded size whose window still has at least `out` pixels in each direction."""
        left, top, right, bottom = self.box
        scale_x = min(1.0, self.out[0] / max(right - left, 1e-6))
        scale_y = min(1.0, self.out[1] / max(bottom - top, 1e-6))
        return (math.ceil(size[0] * scale_x), math.ceil(size[1] * scale_y))

    def map_points(self, points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Points in [-1, 1] of the source (x = -1 is the left edge, +1 the right) -> the same frame of the output."""
        left, top, right, bottom = self.box
        x_pixels = (points[..., 0] + 1.0) * 0.5 * size[0]
        y_pixels = (points[..., 1] + 1.0) * 0.5 * size[1]
        x = 2.0 * (x_pixels - left) / (right - left) - 1.0
        y = 2.0 * (y_pixels - top) / (bottom - top) - 1.0
        return np.stack([x, y], axis=-1).astype(np.float32)

    def source_pixels(self, points: np.ndarray) -> np.ndarray:
        """Points in [-1, 1] of the output -> pixels of the source image: the inverse of map_points followed by
        the scaling of source pixels to [-1, 1]."""
        left, top, right, bottom = self.box
        x = left + (points[..., 0] + 1.0) * 0.5 * (right - left)
        y = top + (points[..., 1] + 1.0) * 0.5 * (bottom - top)
        return np.stack([x, y], axis=-1).astype(np.float32)


def item_to_source(points: np.ndarray, window: Window | None, size: tuple[int, int]) -> np.ndarray:
    """Points (..., 2) in [-1, 1] of the item transform's output -> pixels of the original (width, height) image."""
    if window is not None:
        return window.source_pixels(points)
    scale = np.array([size[0] / 2.0, size[1] / 2.0], dtype=np.float32)
    return ((points + 1.0) * scale).astype(np.float32)


class ItemTransform(Protocol):
    @property
    def size(self) -> tuple[int, int]: ...

    def window(self, size: tuple[int, int], rng: random.Random | None) -> Window:
        """Plan the window for a source of `size` (width, height); `rng` None means validation."""
        ...


@dataclass(frozen=True)
class Resize:
    """crop: the largest window with the output's aspect (random on train, centred on valid); pad: the whole
    image fitted inside, margins padded (random position on train); squish: the whole image, aspect ignored."""

    size: tuple[int, int]  # (height, width)
    method: str = "crop"
    pad_mode: PadMode = "reflection"

    def window(self, size: tuple[int, int], rng: random.Random | None) -> Window:
        width, height = size
        out_h, out_w = self.size
        if self.method == "squish":
            return Window((0.0, 0.0, float(width), float(height)), (out_w, out_h), self.pad_mode)
        ratio_w, ratio_h = width / out_w, height / out_h
        scale = min(ratio_w, ratio_h) if self.method == "crop" else max(ratio_w, ratio_h)
        crop_w, crop_h = scale * out_w, scale * out_h
        pos_x, pos_y = (rng.random(), rng.random()) if rng is not None else (0.5, 0.5)
        left, top = pos_x * (width - crop_w), pos_y * (height - crop_h)
        return Window((left, top, left + crop_w, top + crop_h), (out_w, out_h), self.pad_mode)


@dataclass(frozen=True)
class RandomResizedCrop:
    """Train: a window of min_scale..max_scale of the area with a log-uniform aspect in `ratio` (10 tries, then
    a centre crop with the aspect clamped). Valid: squish to size + xtra, centre crop to size (fastai's choice,
    kept so that models trained here validate like fastai's)."""

    size: tuple[int, int]
    min_scale: float = 0.08
    max_scale: float = 1.0
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    val_xtra: float = 0.14

    def window(self, size: tuple[int, int], rng: random.Random | None) -> Window:
        width, height = size
        out_h, out_w = self.size
        if rng is None:
            # xtra rounds up to a multiple of 8 px: 224 -> 32, 128 -> 24.
            xtra = math.ceil(max(self.size) * self.val_xtra / 8) * 8
            fx, fy = width / (out_w + xtra), height / (out_h + xtra)
            left, top = (xtra // 2) * fx, (xtra // 2) * fy
            return Window((left, top, left + out_w * fx, top + out_h * fy), (out_w, out_h))
        for _ in range(10):
            area = rng.uniform(self.min_scale, self.max_scale) * width * height
            aspect = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
                return Window((left, top, left + crop_w, top + crop_h), (out_w, out_h))
        aspect = width / height
        fit_w, fit_h = float(width), float(height)
        if aspect < self.ratio[0]:
            fit_h = width / self.ratio[0]
        elif aspect > self.ratio[1]:
            fit_w = height * self.ratio[1]
        left, top = (width - fit_w) / 2, (height - fit_h) / 2
        return Window((left, top, left + fit_w, top + fit_h), (out_w, out_h))


def build_item_transform(spec: ItemTfm | None) -> ItemTransform | None:
    """The item transform a spec asks for (None: images are used at their own size)."""
    if spec is None:
        return None
    if isinstance(spec, ResizeTfm):
        return Resize(spec.size, spec.method, spec.pad_mode)
    assert isinstance(spec, RandomResizedCropTfm)
    return RandomResizedCrop(spec.size, spec.min_scale, spec.max_scale, spec.ratio, spec.val_xtra)


def apply_window(image: Image.Image, window: Window, size: tuple[int, int]) -> np.ndarray:
    """Cut `window` (planned on a source of `size`) out of `image` (maybe decoded smaller) -> HWC uint8."""
    sx, sy = image.size[0] / size[0], image.size[1] / size[1]
    left, top, right, bottom = window.box
    box = (left * sx, top * sy, right * sx, bottom * sy)
    if window.inside(size):
        clamped = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], image.size[0]), min(box[3], image.size[1]))
        resized = image.resize(window.out, Image.Resampling.BILINEAR, box=clamped, reducing_gap=_REDUCING_GAP)
        return np.asarray(resized)
    return _padded(image, box, window)


def _padded(image: Image.Image, box: tuple[float, float, float, float], window: Window) -> np.ndarray:
    """The part of the window that covers the image is resampled; the margins are padded around it."""
    out_w, out_h = window.out
    left, top, right, bottom = box
    per_x, per_y = out_w / (right - left), out_h / (bottom - top)
    inner = (max(left, 0.0), max(top, 0.0), min(right, image.size[0]), min(bottom, image.size[1]))
    x0 = min(max(round((inner[0] - left) * per_x), 0), out_w - 1)
    y0 = min(max(round((inner[1] - top) * per_y), 0), out_h - 1)
    x1 = max(min(round((inner[2] - left) * per_x), out_w), x0 + 1)
    y1 = max(min(round((inner[3] - top) * per_y), out_h), y0 + 1)
    resized = image.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=inner, reducing_gap=_REDUCING_GAP)
    pixels = np.asarray(resized)
    widths = ((y0, out_h - y1), (x0, out_w - x1), (0, 0))
    padded: np.ndarray = np.pad(pixels, widths, mode=_NP_PAD_MODE[window.pad_mode])  # type: ignore[call-overload]
    return padded
