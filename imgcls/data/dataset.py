"""One split of the items as a torch Dataset: (index, epoch) -> uint8 image, target, item index.

Randomness (the item transform's crop window) comes from a generator seeded by (seed, epoch, index), so an
item looks the same whichever worker loads it, and a resumed run sees exactly what the original run saw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from imgcls.data.cache import PresizeCache, source_size
from imgcls.data.images import read_image
from imgcls.data.item_tfms import ItemTransform, Window, apply_window
from imgcls.errors import ImageReadError
from imgcls.targets import EncodedTargets


@dataclass(frozen=True)
class BadItem:
    """An item whose file could not be read; carried to the main process instead of raising in a worker."""

    index: int
    path: str
    reason: str


# HWC uint8 pixels, the encoded target, the item's index. Numpy, not tensors: a batch is stacked once in
# the collate function, and its NHWC memory is what channels_last convolutions want anyway.
Sample = tuple[np.ndarray, np.ndarray, int]


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A distinct, reproducible integer seed per (run seed, epoch, item)."""
    return (seed * 1_000_003 + epoch) * 1_000_003 + index


class ImageDataset(Dataset[Sample | BadItem]):
    """Items `indices` of `paths`; `train` selects random (train) or centred (valid) item transforms.
    Without `targets` (files to predict) every item's target is an empty float array."""

    def __init__(
        self,
        paths: list[Path],
        targets: EncodedTargets | None,
        indices: np.ndarray,
        item_tfm: ItemTransform | None,
        train: bool,
        seed: int,
        cache: PresizeCache | None = None,
    ) -> None:
        self.paths = [str(p) for p in paths]  # plain strings pickle fast into worker processes
        self.targets = targets
        self.indices = np.asarray(indices, dtype=np.int64)
        self.item_tfm = item_tfm
        self.train = train
        self.seed = seed
        self.cache = cache

    def __len__(self) -> int:
        return len(self.indices)

    def window(self, index: int, epoch: int, size: tuple[int, int]) -> Window | None:
        if self.item_tfm is None:
            return None
        rng = random.Random(item_seed(self.seed, epoch, index)) if self.train else None
        return self.item_tfm.window(size, rng)

    def load(self, position: int, epoch: int) -> tuple[np.ndarray, np.ndarray, Window | None]:
        """HWC uint8 pixels, the encoded target and the window used, for the split's `position`-th item."""
        index = int(self.indices[position])
        if self.cache is None:
            pixels, size, window = self._decode(index, epoch)
        elif self.cache.kind == "final":
            pixels, size, window = self._cached_final(index, epoch)
        else:
            pixels, size, window = self._cached_source(index, epoch)
        return pixels, self.target(index, size, window), window

    def _decode(self, index: int, epoch: int) -> tuple[np.ndarray, tuple[int, int], Window | None]:
        plan: list[Window | None] = []

        def draft_for(size: tuple[int, int]) -> tuple[int, int] | None:
            plan.append(self.window(index, epoch, size))
            return plan[0].draft_size(size) if plan[0] is not None else None

        image, size = read_image(Path(self.paths[index]), draft_for)
        window = plan[0]
        pixels = apply_window(image, window, size) if window is not None else np.asarray(image)
        return pixels, size, window

    def _cached_final(self, index: int, epoch: int) -> tuple[np.ndarray, tuple[int, int], Window | None]:
        assert self.cache is not None
        entry = self.cache.entry(self.paths[index])
        out = (self.item_tfm.size[1], self.item_tfm.size[0]) if self.item_tfm is not None else None
        hit = self.cache.read(entry, out)
        if hit is None:
            pixels, size, window = self._decode(index, epoch)
            self.cache.write(entry, pixels, size)
            return pixels, size, window
        pixels, size = hit
        return pixels, size, self.window(index, epoch, size)

    def _cached_source(self, index: int, epoch: int) -> tuple[np.ndarray, tuple[int, int], Window | None]:
        assert self.cache is not None and self.item_tfm is not None
        entry = self.cache.entry(self.paths[index])
        hit = self.cache.read(entry, None)
        if hit is None:
            cache, transform = self.cache, self.item_tfm
            image, size = read_image(Path(self.paths[index]), lambda s: source_size(transform, s))
            source = cache.source_entry(image, size)
            cache.write(entry, source, size)
        else:
            source, size = hit
        window = self.window(index, epoch, size)
        assert window is not None
        return apply_window(Image.fromarray(source), window, size), size, window

    def target(self, index: int, size: tuple[int, int], window: Window | None) -> np.ndarray:
        if self.targets is None:
            return np.zeros(0, dtype=np.float32)
        return self.targets.target.item_target(self.targets.values[index], size, window)

    def __getitem__(self, key: tuple[int, int] | int) -> Sample | BadItem:
        position, epoch = key if isinstance(key, tuple) else (key, 0)
        try:
            pixels, target, _ = self.load(position, epoch)
        except ImageReadError as err:
            return BadItem(int(self.indices[position]), err.path, err.reason)
        return pixels, target, int(self.indices[position])
