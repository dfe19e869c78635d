"""Splitting items into training and validation sets. Sizes are exact and reproducible."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from imgcls.data.items import ItemList, column
from imgcls.errors import DataError
from imgcls.spec.data import (
    ColumnSplit,
    FileSplit,
    FolderNameSplit,
    GrandparentSplit,
    PathRegexSplit,
    RandomSplit,
    Split,
)


@dataclass(frozen=True)
class SplitIndices:
    """Sorted item indices of each set; items in neither (grandparent split) are left out."""

    train: np.ndarray
    valid: np.ndarray


def _from_mask(valid: np.ndarray, keep: np.ndarray | None = None) -> SplitIndices:
    keep = np.ones_like(valid) if keep is None else keep
    return SplitIndices(np.flatnonzero(keep & ~valid), np.flatnonzero(keep & valid))


def random_split(n_items: int, valid_pct: float, seed: int) -> SplitIndices:
    """int(valid_pct * n) items to validation, as fastai's RandomSplitter counts them.

    The permutation comes from a local generator, so the global torch RNG is untouched; for the same seed
    it is the permutation fastai's torch.manual_seed(seed); torch.randperm(n) gives.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_items, generator=generator).numpy()
    cut = int(valid_pct * n_items)
    return SplitIndices(np.sort(order[cut:]), np.sort(order[:cut]))


def _grandparent(items: ItemList, spec: GrandparentSplit) -> SplitIndices:
    names = np.array([p.parent.parent.name for p in items.paths])
    train, valid = np.isin(names, spec.train), np.isin(names, spec.valid)
    return _from_mask(valid, train | valid)


def _column(items: ItemList, spec: ColumnSplit) -> SplitIndices:
    assert items.rows is not None
    values = column(items.rows, spec.column, "the CSV file", "data.split.column")
    if values.dtype == bool:
        return _from_mask(values.to_numpy())
    truthy = {"true", "1", "yes", "y", "t"}
    falsy = {"false", "0", "no", "n", "f", ""}
    text = values.map(lambda v: "" if pd.isna(v) else str(v).strip().lower())
    odd = sorted(set(text) - truthy - falsy)
    if odd:
        raise DataError(f"data.split.column '{spec.column}' holds values that are not booleans: {odd[:5]}")
    return _from_mask(text.isin(truthy).to_numpy())


def _folder_name(items: ItemList, spec: FolderNameSplit) -> SplitIndices:
    """Validation = the items whose parent folder has one of the names; a name no folder has is an error that
    lists the folder names there are (a typo would otherwise move nothing, or everything but one folder)."""
    parents = [p.parent.name for p in items.paths]
    present = sorted(set(parents))
    missing = [name for name in spec.valid if name not in present]
    if missing:
        shown = ", ".join(present[:30]) + (f", ... ({len(present)} in all)" if len(present) > 30 else "")
        raise DataError(
            f"data.split.valid: no image is in a folder named {', '.join(repr(m) for m in missing)}; "
            f"the images' folders are named: {shown}",
            hint="list folder names (the image's own folder, not a path), e.g. valid: ['13'] for BIWI's person 13",
        )
    return _from_mask(np.isin(parents, spec.valid))


def _file(items: ItemList, spec: FileSplit) -> SplitIndices:
    listing = items.root / spec.file
    if not listing.is_file():
        raise DataError(f"data.split.file: {listing} not found", hint="the file is relative to data.path")
    entries = {
        line.strip().replace("\\", "/")
        for line in listing.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    relative = [items.relative(i) for i in range(len(items))]
    valid = np.array([rel in entries or Path(rel).name in entries for rel in relative])
    matched = {rel for rel in relative if rel in entries} | {Path(rel).name for rel in relative}
    unmatched = sorted(entries - matched)
    if unmatched:
        raise DataError(
            f"{len(unmatched)} entries of {listing} match no item, e.g. {', '.join(unmatched[:3])}",
            hint="list paths relative to data.path (or bare file names), one per line",
        )
    return _from_mask(valid)


def split_items(items: ItemList, spec: Split) -> SplitIndices:
    """Apply the spec's splitter and check that both sets are non-empty."""
    if isinstance(spec, RandomSplit):
        result = random_split(len(items), spec.valid_pct, spec.seed)
    elif isinstance(spec, GrandparentSplit):
        result = _grandparent(items, spec)
    elif isinstance(spec, FolderNameSplit):
        result = _folder_name(items, spec)
    elif isinstance(spec, PathRegexSplit):
        pattern = re.compile(spec.pattern)
        result = _from_mask(np.array([bool(pattern.search(items.relative(i))) for i in range(len(items))]))
    elif isinstance(spec, ColumnSplit):
        result = _column(items, spec)
    else:
        result = _file(items, spec)
    for name, indices in (("training", result.train), ("validation", result.valid)):
        if len(indices) == 0:
            raise DataError(
                f"the {spec.kind} split leaves the {name} set empty ({len(items)} items in all)",
                hint="check data.split; e.g. grandparent needs path/train/<label>/x.jpg and path/valid/<label>/y.jpg",
            )
    return result
