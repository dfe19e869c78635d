"""`data.decode: device`: workers read each file's bytes and plan its item window; the batch is decoded later, on
the training device (imgcls/augment/decode.py).

A worker reads the file whole and parses its header only, then plans the window from the displayed size with the
item's own seed, exactly as the PIL path does, so both paths cut the same windows and give the same targets
(point targets move with the window). Files that are not plain RGB JPEGs (PNG and other formats, grey and CMYK
JPEGs, EXIF-rotated or progressive ones; images.read_encoded says which) are decoded by the PIL path in the
worker, as with `decode: pil`; a batch can mix both kinds and keeps its order. Unreadable files become BadItems,
like the PIL path's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from imgcls.data.dataset import BadItem, ImageDataset, Sample
from imgcls.data.images import read_encoded, read_image
from imgcls.data.item_tfms import Window, apply_window
from imgcls.data.loaders import Batch, Collate
from imgcls.errors import ImageReadError


@dataclass(frozen=True)
class EncodedItem:
    """A JPEG for the device to decode: its bytes, displayed size and planned window, the item's target."""

    data: np.ndarray  # the file's bytes, uint8
    size: tuple[int, int]  # (width, height)
    window: Window | None
    target: np.ndarray
    index: int


class EncodedDataset(Dataset[EncodedItem | Sample | BadItem]):
    """The items of `pil` (an ImageDataset, whose windows, targets and PIL path it shares), with plain JPEGs left
    encoded."""

    def __init__(self, pil: ImageDataset) -> None:
        if pil.cache is not None:
            raise ValueError("decode: device reads the files themselves: it takes no presize cache")
        self.pil = pil
        self.paths = pil.paths

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, key: tuple[int, int] | int) -> EncodedItem | Sample | BadItem:
        position, epoch = key if isinstance(key, tuple) else (key, 0)
        index = int(self.pil.indices[position])
        try:
            encoded = read_encoded(Path(self.paths[index]))
        except ImageReadError as err:
            return BadItem(index, err.path, err.reason)
        if not encoded.plain_jpeg:
            return self.pil[(position, epoch)]  # decoded here, by PIL, as with decode: pil
        window = self.pil.window(index, epoch, encoded.size)
        target = self.pil.target(index, encoded.size, window)
        return EncodedItem(np.frombuffer(encoded.data, dtype=np.uint8), encoded.size, window, target, index)


def decode_window(path: str, window: Window | None) -> np.ndarray:
    """The PIL path for one item whose window is already planned: HWC uint8 (raises ImageReadError)."""
    image, size = read_image(Path(path), window.draft_size if window is not None else None)
    return apply_window(image, window, size) if window is not None else np.asarray(image)


@dataclass
class EncodedBatch:
    """One batch, in order: the JPEGs still encoded (`rows` says where each goes) and the items the workers decoded
    (`decoded`, an ordinary Batch, in the remaining rows, with every unreadable item and any collate error)."""

    data: torch.Tensor  # uint8: the encoded files back to back
    offsets: list[int]  # where each encoded file starts in `data`, then where the last one ends
    sizes: list[tuple[int, int]]
    windows: list[Window | None]
    paths: list[str]
    rows: torch.Tensor  # int64: the batch row of each encoded file
    decoded: Batch
    targets: torch.Tensor  # every good item's, in batch order
    indices: torch.Tensor

    @property
    def out_size(self) -> tuple[int, int]:
        """(height, width) of every image of the batch after the item transform."""
        if self.windows and self.windows[0] is not None:
            return self.windows[0].out[1], self.windows[0].out[0]
        if self.sizes:
            return self.sizes[0][1], self.sizes[0][0]
        return int(self.decoded.images.shape[2]), int(self.decoded.images.shape[3])

    def files(self) -> list[torch.Tensor]:
        """Each encoded file as a 1-D uint8 tensor (views of `data`)."""
        return [self.data[start:end] for start, end in zip(self.offsets[:-1], self.offsets[1:], strict=True)]

    def pin_memory(self) -> EncodedBatch:
        """Pinned decoded pixels and targets (the DataLoader's pin thread calls this); the bytes are copied to
        the device by the decoder itself."""
        if self.decoded.error is not None or len(self.indices) == 0:
            return self
        targets = self.targets.pin_memory()
        return EncodedBatch(
            self.data,
            self.offsets,
            self.sizes,
            self.windows,
            self.paths,
            self.rows,
            self.decoded.pin_memory(),
            targets,
            self.indices,
        )

    def __len__(self) -> int:
        return len(self.indices)


def _out_shape(item: EncodedItem | Sample) -> tuple[int, int]:
    if isinstance(item, EncodedItem):
        if item.window is not None:
            return item.window.out[1], item.window.out[0]
        return item.size[1], item.size[0]
    return int(item[0].shape[0]), int(item[0].shape[1])


class EncodedCollate:
    """EncodedItems, Samples and BadItems -> one EncodedBatch; like Collate, it never raises in a worker."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = paths
        self.collate = Collate(paths)

    def __call__(self, items: list[EncodedItem | Sample | BadItem]) -> EncodedBatch:
        good = [item for item in items if not isinstance(item, BadItem)]
        encoded = [item for item in good if isinstance(item, EncodedItem)]
        samples: list[Sample | BadItem] = [item for item in items if not isinstance(item, EncodedItem)]
        decoded = self.collate(samples)
        shapes = {_out_shape(item) for item in good}
        if len(shapes) > 1 and decoded.error is None:
            decoded.error = self._size_error(good)
        if decoded.error is not None or not good:
            return self._empty(decoded)
        lengths = [len(item.data) for item in encoded]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64).tolist()
        data = torch.from_numpy(np.concatenate([item.data for item in encoded])) if encoded else torch.zeros(0)
        rows = [row for row, item in enumerate(good) if isinstance(item, EncodedItem)]
        targets = torch.from_numpy(np.stack([self._target(item) for item in good]))
        indices = torch.tensor([self._index(item) for item in good], dtype=torch.int64)
        return EncodedBatch(
            data.to(torch.uint8),
            offsets,
            [item.size for item in encoded],
            [item.window for item in encoded],
            [self.paths[item.index] for item in encoded],
            torch.tensor(rows, dtype=torch.int64),
            decoded,
            targets,
            indices,
        )

    @staticmethod
    def _target(item: EncodedItem | Sample) -> np.ndarray:
        return item.target if isinstance(item, EncodedItem) else item[1]

    @staticmethod
    def _index(item: EncodedItem | Sample) -> int:
        return item.index if isinstance(item, EncodedItem) else item[2]

    def _size_error(self, good: list[EncodedItem | Sample]) -> str:
        first = good[0]
        other = next(item for item in good if _out_shape(item) != _out_shape(first))
        (h1, w1), (h2, w2) = _out_shape(first), _out_shape(other)
        return (
            f"cannot collate a batch: images have different sizes, e.g. {w1}x{h1} px "
            f"({self.paths[self._index(first)]}) and {w2}x{h2} px ({self.paths[self._index(other)]}); "
            "add an item transform that makes every image the same size, e.g. "
            "data.item_tfm: {kind: resize, size: 460}"
        )

    @staticmethod
    def _empty(decoded: Batch) -> EncodedBatch:
        none = torch.zeros(0, dtype=torch.int64)
        return EncodedBatch(torch.zeros(0, dtype=torch.uint8), [0], [], [], [], none, decoded, torch.zeros(0), none)
