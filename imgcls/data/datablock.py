"""The DataBlock: items -> labels -> split -> encoded targets, and the datasets of each split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from imgcls.data.cache import PresizeCache
from imgcls.data.dataset import ImageDataset
from imgcls.data.item_tfms import ItemTransform, build_item_transform
from imgcls.data.items import ItemList, collect_items
from imgcls.data.labels import label_items
from imgcls.data.sources import resolve_root
from imgcls.data.splits import SplitIndices, split_items
from imgcls.errors import DataError
from imgcls.spec.data import DataSpec
from imgcls.targets import TARGETS, EncodedTargets, Target


@dataclass(frozen=True)
class DataBundle:
    """Everything known about the data before any pixel is decoded."""

    spec: DataSpec
    items: ItemList
    split: SplitIndices
    targets: EncodedTargets
    item_tfm: ItemTransform | None

    @property
    def target(self) -> Target:
        return self.targets.target

    def dataset(
        self, train: bool, seed: int, *, randomized: bool | None = None, cache: PresizeCache | None = None
    ) -> ImageDataset:
        """The training or validation items; `randomized` (default: `train`) draws random item windows."""
        indices = self.split.train if train else self.split.valid
        random_windows = train if randomized is None else randomized
        return ImageDataset(self.items.paths, self.targets, indices, self.item_tfm, random_windows, seed, cache)

    def class_counts(self, train: bool) -> dict[str, int]:
        """Items per class or label in one split (empty for targets without classes)."""
        indices = self.split.train if train else self.split.valid
        return self.target.class_counts(self.targets.values[indices])

    def without(self, items: set[int]) -> DataBundle:
        """The same data with `items` (item indices) left out of both splits."""
        if not items:
            return self
        drop = np.array(sorted(items), dtype=np.int64)
        split = SplitIndices(np.setdiff1d(self.split.train, drop), np.setdiff1d(self.split.valid, drop))
        for name, indices in (("training", split.train), ("validation", split.valid)):
            if len(indices) == 0:
                raise DataError(f"no readable item is left in the {name} set ({len(items)} unreadable left out)")
        return replace(self, split=split)

    def valid_items(self) -> list[str]:
        """Validation items relative to the data root: the record of the split kept with each run."""
        return [self.items.relative(int(i)) for i in self.split.valid]


Splitter = Callable[[ItemList], SplitIndices]


def build_data(spec: DataSpec, quiet: bool = False, splitter: Splitter | None = None) -> DataBundle:
    """The DataBlock of `spec`; `splitter` replaces the spec's split (cross-validation folds give theirs), and
    the vocab is learnt from its training items as from any split's. The spec's labeller runs (a callable is
    imported)."""
    root: Path = resolve_root(spec, quiet)
    items = collect_items(root, spec.items)
    labels = label_items(items, spec.labels)
    split = split_items(items, spec.split) if splitter is None else splitter(items)
    targets = TARGETS.get(spec.target).encode(labels, split.train, split.valid)
    return DataBundle(spec, items, split, targets, build_item_transform(spec.item_tfm))


__all__ = ["DataBundle", "Splitter", "build_data"]
