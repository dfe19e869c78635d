"""The presize cache: each image decoded and presized once, then read back instead of decoded.

One file per item and transform, named by a hash of (absolute path, modification time, file size, item
transform, kind), so a changed file or transform is a new key and is decoded again, never served stale.
Files are written to a temporary name and renamed, so workers, DDP ranks and later runs can share a cache.

Two kinds of entry:
- final: the item transform's exact output, for validation items and for transforms with no randomness
  (squish, none). Reading it gives the same pixels as decoding, so validation metrics do not change.
- source: for training items whose window is random (crop, pad, random resized crop), the image at the
  smallest scale at which every window it can draw still has an output pixel per source pixel; a fresh
  window is cut from it every epoch.

File layout: 8 bytes (original width and height as little-endian uint32), then HWC uint8 pixels whose shape
follows from the original size and the transform.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgcls.data.item_tfms import ItemTransform, RandomResizedCrop, Resize, Window, apply_window

_HEADER = np.dtype("<u4")


def transform_key(transform: ItemTransform | None) -> str:
    if transform is None:
        return "none"
    fields = asdict(transform) if is_dataclass(transform) else vars(transform)
    return f"{type(transform).__name__}{sorted(fields.items())}"


def source_size(transform: ItemTransform, size: tuple[int, int]) -> tuple[int, int]:
    """The cached (width, height) of a source entry: at most the original, at least what windows need."""
    width, height = size
    out_h, out_w = transform.size
    if isinstance(transform, RandomResizedCrop):
        # The smallest window has sqrt(min_scale) of the image's side (at aspect 1); it must keep >= 1 px per
        # output pixel, so the short side is at least out / sqrt(min_scale).
        needed = max(out_h, out_w) / math.sqrt(transform.min_scale) / min(width, height)
    else:
        assert isinstance(transform, Resize)
        ratio_w, ratio_h = width / out_w, height / out_h
        window_scale = min(ratio_w, ratio_h) if transform.method == "crop" else max(ratio_w, ratio_h)
        needed = 1.0 / window_scale  # the window (window_scale * out px) becomes exactly `out` px
    scale = min(1.0, needed)
    return (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))


def has_random_window(transform: ItemTransform | None) -> bool:
    return isinstance(transform, RandomResizedCrop) or (isinstance(transform, Resize) and transform.method != "squish")


class PresizeCache:
    """Per-item files under `folder` for one item transform and split (`train` picks the entry kind)."""

    def __init__(self, folder: Path, transform: ItemTransform | None, train: bool, writable: bool = True) -> None:
        self.folder = folder
        self.writable = writable  # False when evaluating a run: its cache is read, never written
        self.transform = transform
        self.kind = "source" if train and has_random_window(transform) else "final"
        self._tag = f"{transform_key(transform)}|{self.kind}"

    def entry(self, path: str) -> Path:
        stat = os.stat(path)
        key = f"{os.path.abspath(path)}|{stat.st_mtime_ns}|{stat.st_size}|{self._tag}"
        digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()
        return self.folder / digest[:2] / f"{digest}.u8"

    def read(self, entry: Path, out: tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int]] | None:
        """(pixels, original size), or None when the entry is missing or unreadable."""
        try:
            raw = np.fromfile(entry, dtype=np.uint8)
        except OSError:
            return None
        if raw.size < 8:
            return None
        width, height = (int(v) for v in raw[:8].view(_HEADER))
        if self.kind == "source":
            assert self.transform is not None
            shape_w, shape_h = source_size(self.transform, (width, height))
        elif out is not None:
            shape_w, shape_h = out
        else:
            shape_w, shape_h = width, height
        pixels = raw[8:]
        if pixels.size != shape_w * shape_h * 3:
            return None  # written by a different version of this layout: decode again
        return pixels.reshape(shape_h, shape_w, 3), (width, height)

    def write(self, entry: Path, pixels: np.ndarray, size: tuple[int, int]) -> None:
        if not self.writable:
            return
        entry.parent.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(dir=entry.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(np.array(size, dtype=_HEADER).tobytes())
                stream.write(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
            os.replace(scratch, entry)
        except OSError:
            Path(scratch).unlink(missing_ok=True)  # a full disk only costs the cache, never the run

    def source_entry(self, image: Image.Image, size: tuple[int, int]) -> np.ndarray:
        """The decoded image resized to the source size the transform's windows need."""
        assert self.transform is not None
        target = source_size(self.transform, size)
        if image.size == target:
            return np.asarray(image)
        box_window = Window((0.0, 0.0, float(size[0]), float(size[1])), target)
        return apply_window(image, box_window, size)
