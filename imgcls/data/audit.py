"""Auditing a dataset before training: unreadable files, exact and near duplicates, leakage between the splits,
class balance, colour modes and sizes. Every item of the split is decoded once, by the decoder training uses.

Exact duplicates have the same decoded pixels: a BLAKE2 hash of the RGB array and its size, so a JPEG re-saved
as PNG (same pixels, other bytes) is an exact duplicate. Near duplicates are found by perceptual hashes:
imagehash's phash and dhash, 8x8 each (128 bits per image), and two images are near duplicates when the sum of
their two Hamming distances is at most NEAR_THRESHOLD bits. Groups are the connected components of that graph.

The threshold was measured on the 2,900 demo images (folder, multilabel and points layouts) with every 10th
image copied 10 ways (benchmarks/duplicate_hash_margin.py): resized copies (x0.5, x0.75, x1.5), JPEG re-encodes
(quality 30-95) and resized re-encodes (x0.6 at quality 60, x0.4 at 75) are at most 7 bits from their original
(PNG re-saves: 0), and the closest two distinct images are 22 bits apart. 16 leaves 9 bits for harsher copies
and 6 before distinct images pair up. phash alone cannot separate them: distinct demo images come within 4 of
its 64 bits, and so do copies. The hashes see grey levels only: images that differ in colour alone (solid
colours, recoloured copies) hash alike and are reported as near duplicates.
"""

from __future__ import annotations

import hashlib
import signal
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.data.datablock import DataBundle
from imgcls.data.images import read_image, read_image_info
from imgcls.errors import ImageReadError

HASH_SIZE = 8  # phash and dhash of 8x8 cells: 64 bits each
HASH_BITS = 2 * HASH_SIZE * HASH_SIZE
NEAR_THRESHOLD = 16  # bits of the 128; see the module docstring for the measured margins
TINY_PX = 32  # an image under this on either side is reported as tiny (thumbnails, icons)
FINDINGS = ("leakage", "unreadable", "duplicates", "imbalance")
_SCAN_BATCH = 16
# The pair search compares a block of rows against the rest at once; 4 M distances (8 MB as uint16, 32 MB of
# uint64 XOR temporaries) per block keeps memory flat for any N.
_PAIR_BUDGET = 1 << 22


@dataclass(frozen=True)
class ImageRecord:
    """One decoded item: what the file held (mode, format, EXIF orientation), its displayed size and hashes.

    Unreadable files have `error` set (read_image's reason) and nothing else.
    """

    index: int
    mode: str = ""
    format: str = ""
    orientation: int = 1
    width: int = 0
    height: int = 0
    pixel_hash: str = ""
    phash: int = 0
    dhash: int = 0
    error: str = ""

    @property
    def readable(self) -> bool:
        return not self.error


def inspect_image(path: Path, index: int) -> ImageRecord:
    """Decode `path` once (training's decoder, full scale) and record everything the audit needs of it."""
    import imagehash

    try:
        image, size, info = read_image_info(path)
    except ImageReadError as err:
        return ImageRecord(index, error=err.reason)
    digest = hashlib.blake2b(f"{image.width}x{image.height}:".encode(), digest_size=16)
    digest.update(image.tobytes())
    return ImageRecord(
        index,
        mode=info.mode,
        format=info.format or "",
        orientation=info.orientation,
        width=size[0],
        height=size[1],
        pixel_hash=digest.hexdigest(),
        phash=int(str(imagehash.phash(image, hash_size=HASH_SIZE)), 16),
        dhash=int(str(imagehash.dhash(image, hash_size=HASH_SIZE)), 16),
    )


class _ScanSet:
    """A map-style dataset of (path, item index) -> ImageRecord, for a torch DataLoader's worker processes."""

    def __init__(self, paths: Sequence[Path], indices: Sequence[int]) -> None:
        self.paths = [str(p) for p in paths]
        self.indices = [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> ImageRecord:
        return inspect_image(Path(self.paths[position]), self.indices[position])


def _as_list(records: list[ImageRecord]) -> list[ImageRecord]:
    return records


def _ignore_interrupt(_: int) -> None:
    """Workers leave Ctrl-C to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def scan_images(
    paths: Sequence[Path], indices: Sequence[int], workers: int = 0, progress: Callable[[int], None] | None = None
) -> list[ImageRecord]:
    """inspect_image of every path, in `workers` processes (0: this one); records come back in input order."""
    import torch
    from torch.utils.data import DataLoader

    loader: DataLoader[Any] = DataLoader(
        _ScanSet(paths, indices),  # type: ignore[arg-type]
        batch_size=_SCAN_BATCH,
        num_workers=workers,
        collate_fn=_as_list,
        # Worker seeds come from this generator, not the global one (nothing here is random anyway).
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=_ignore_interrupt if workers > 0 else None,
    )
    records: list[ImageRecord] = []
    for batch in loader:
        records.extend(batch)
        if progress is not None:
            progress(len(batch))
    return records


# --- near-duplicate pairs -------------------------------------------------------------------------------------


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        counted: np.ndarray = np.bitwise_count(values)
        return counted
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    summed: np.ndarray = table[values.view(np.uint8).reshape(*values.shape, 8)].sum(axis=-1, dtype=np.uint8)
    return summed


def hamming(codes: np.ndarray, first: int, second: int) -> int:
    """Total Hamming distance between rows `first` and `second` of (N, W) uint64 codes."""
    return int(_popcount(codes[first] ^ codes[second]).sum())


def close_pairs(codes: np.ndarray, threshold: int, budget: int = _PAIR_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i < j) of (N, W) uint64 codes whose total Hamming distance is at most `threshold`.

    Vectorised in blocks of rows against the rest of the upper triangle: N^2/2 distances, about `budget` of them
    in memory at a time. Returns the (M, 2) pairs and their (M,) distances.
    """
    n = len(codes)
    rows = max(1, budget // max(n, 1))
    found_pairs, found_distances = [], []
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        block, rest = codes[start:stop], codes[start:]
        distance = np.zeros((stop - start, n - start), dtype=np.uint16)
        for word in range(codes.shape[1]):
            distance += _popcount(block[:, None, word] ^ rest[None, :, word])
        row, col = np.nonzero(distance <= threshold)
        upper = col > row  # the block's own diagonal and below are the same pairs again
        found_pairs.append(np.stack([row[upper] + start, col[upper] + start], axis=1))
        found_distances.append(distance[row[upper], col[upper]].astype(np.int64))
    if not found_pairs:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(found_pairs).astype(np.int64), np.concatenate(found_distances)


def near_components(codes: np.ndarray, threshold: int) -> np.ndarray:
    """A component number per row: rows joined by chains of distances <= threshold share one.

    Rows with equal codes are collapsed first, so a dataset of many identical hashes costs no more than one.
    """
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components

    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64)
    unique, inverse = np.unique(codes, axis=0, return_inverse=True)
    pairs, _ = close_pairs(unique, threshold)
    graph = coo_array(
        (np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(len(unique), len(unique))
    )
    _, labels = connected_components(graph, directed=False)
    component: np.ndarray = np.asarray(labels, dtype=np.int64)[np.ravel(inverse)]
    return component


# --- findings -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditItem:
    """An item of the split: its index in the item list, path relative to the data root, split and label."""

    index: int
    path: str
    split: str  # train | valid
    label: str


@dataclass(frozen=True)
class DuplicateGroup:
    """Items with the same pixels (exact) or a chain of near-identical hashes (near), in item order.

    `distances` are Hamming distances in bits to the first member (0 for every exact duplicate).
    """

    kind: str  # exact | near
    number: int  # 1-based, per kind, in order of the first member
    members: tuple[int, ...]
    distances: tuple[int, ...]

    def splits(self, items: dict[int, AuditItem]) -> set[str]:
        return {items[m].split for m in self.members}


# Largest / smallest training class above which `imgcls summary` warns and `imgcls audit` reports a finding.
MAX_IMBALANCE = 3.0


@dataclass(frozen=True)
class ClassCounts:
    """Items per label in each split (category and multi-label targets)."""

    train: dict[str, int]
    valid: dict[str, int]

    @property
    def imbalance(self) -> float | None:
        """Largest training class / smallest; None when the smallest has none."""
        counts = list(self.train.values())
        return max(counts) / min(counts) if counts and min(counts) > 0 else None


@dataclass(frozen=True)
class Spread:
    minimum: float
    median: float
    maximum: float

    @classmethod
    def of(cls, values: np.ndarray) -> Spread:
        if len(values) == 0:
            return cls(0.0, 0.0, 0.0)
        return cls(float(values.min()), float(np.median(values)), float(values.max()))


@dataclass(frozen=True)
class SizeStats:
    """Displayed sizes (after EXIF) of the readable items; aspect = width / height."""

    width: Spread
    height: Spread
    aspect: Spread
    tiny: int  # items under TINY_PX on either side


@dataclass
class DataAudit:
    """Everything `imgcls audit` finds in the data; no printing, no files."""

    root: Path
    items: dict[int, AuditItem]  # by item index, the items of both splits
    records: dict[int, ImageRecord]
    exact: list[DuplicateGroup]
    near: list[DuplicateGroup]
    class_counts: ClassCounts | None
    unused: int  # items in neither split (a grandparent split's other folders)
    threshold: int = NEAR_THRESHOLD
    leakage: list[DuplicateGroup] = field(init=False)

    def __post_init__(self) -> None:
        self.leakage = [g for g in self.exact + self.near if g.splits(self.items) == {"train", "valid"}]

    def unreadable(self) -> list[ImageRecord]:
        return [r for r in self.records.values() if not r.readable]

    def readable(self) -> list[ImageRecord]:
        return [r for r in self.records.values() if r.readable]

    def leaked_valid(self) -> tuple[set[int], set[int]]:
        """Validation items with a duplicate in training: (all of them, those with an exact one)."""
        leaked: set[int] = set()
        exact: set[int] = set()
        for group in self.leakage:
            valid = {m for m in group.members if self.items[m].split == "valid"}
            leaked |= valid
            if group.kind == "exact":
                exact |= valid
        return leaked, exact

    def conflicting_labels(self) -> list[DuplicateGroup]:
        """Duplicate groups whose members do not all have the same label: one of them is likely wrong."""
        return [g for g in self.exact + self.near if len({self.items[m].label for m in g.members}) > 1]

    def modes(self) -> dict[str, int]:
        """PIL modes before conversion to RGB, most common first."""
        return dict(Counter(r.mode for r in self.readable()).most_common())

    def formats(self) -> dict[str, int]:
        return dict(Counter(r.format for r in self.readable()).most_common())

    def rotated(self) -> int:
        """Items whose EXIF orientation is not upright (applied when they are decoded)."""
        return sum(r.orientation != 1 for r in self.readable())

    def sizes(self) -> SizeStats:
        readable = self.readable()
        widths = np.array([r.width for r in readable], dtype=np.float64)
        heights = np.array([r.height for r in readable], dtype=np.float64)
        aspect = widths / np.maximum(heights, 1)
        tiny = int(((widths < TINY_PX) | (heights < TINY_PX)).sum())
        return SizeStats(Spread.of(widths), Spread.of(heights), Spread.of(aspect), tiny)

    def findings(self, max_imbalance: float) -> list[str]:
        """The FINDINGS present; imbalance counts when the largest / smallest training class > max_imbalance."""
        ratio = self.class_counts.imbalance if self.class_counts is not None else None
        present = {
            "leakage": bool(self.leakage),
            "unreadable": bool(self.unreadable()),
            "duplicates": bool(self.exact or self.near),
            "imbalance": ratio is not None and ratio > max_imbalance,
        }
        return [name for name in FINDINGS if present[name]]

    def counts(self) -> dict[str, Any]:
        """The number behind every finding (audit.json's `counts`)."""
        leaked, exact = self.leaked_valid()
        return {
            "items": len(self.items),
            "train": sum(i.split == "train" for i in self.items.values()),
            "valid": sum(i.split == "valid" for i in self.items.values()),
            "unused": self.unused,
            "unreadable": len(self.unreadable()),
            "exact_duplicate_groups": len(self.exact),
            "exact_duplicate_items": sum(len(g.members) for g in self.exact),
            "exact_duplicate_extra_copies": sum(len(g.members) - 1 for g in self.exact),
            "near_duplicate_groups": len(self.near),
            "near_duplicate_items": sum(len(g.members) for g in self.near),
            "leakage_groups": len(self.leakage),
            "leaked_valid_items": len(leaked),
            "leaked_valid_items_exact": len(exact),
            "leaked_valid_items_near_only": len(leaked - exact),
            "conflicting_label_groups": len(self.conflicting_labels()),
            "exif_rotated": self.rotated(),
            "tiny": self.sizes().tiny,
        }


# --- building the audit ---------------------------------------------------------------------------------------


def split_items(data: DataBundle) -> dict[int, AuditItem]:
    """The items of both splits, in item order, with their split and label as text."""
    split = {int(i): "train" for i in data.split.train} | {int(i): "valid" for i in data.split.valid}
    return {
        index: AuditItem(
            index, data.items.relative(index), split[index], data.target.label_text(data.targets.values[index])
        )
        for index in sorted(split)
    }


def exact_groups(records: Sequence[ImageRecord]) -> list[DuplicateGroup]:
    by_hash: dict[str, list[int]] = defaultdict(list)
    for record in records:
        if record.readable:
            by_hash[record.pixel_hash].append(record.index)
    members = sorted(sorted(group) for group in by_hash.values() if len(group) > 1)
    return [DuplicateGroup("exact", n + 1, tuple(m), (0,) * len(m)) for n, m in enumerate(members)]


def hash_codes(records: Sequence[ImageRecord]) -> np.ndarray:
    """(N, 2) uint64: phash and dhash of each record."""
    return np.array([[r.phash, r.dhash] for r in records], dtype=np.uint64).reshape(len(records), 2)


def near_groups(records: Sequence[ImageRecord], threshold: int = NEAR_THRESHOLD) -> list[DuplicateGroup]:
    """Connected components of near-identical hashes that hold more than one distinct picture (components of
    pixel-identical items only are exact groups, not near ones)."""
    readable = [r for r in records if r.readable]
    codes = hash_codes(readable)
    component = near_components(codes, threshold)
    positions: dict[int, list[int]] = defaultdict(list)
    for position, number in enumerate(component.tolist()):
        positions[number].append(position)
    chosen = [
        sorted(group, key=lambda p: readable[p].index)
        for group in positions.values()
        if len({readable[p].pixel_hash for p in group}) > 1
    ]
    chosen.sort(key=lambda group: readable[group[0]].index)
    groups = []
    for number, group in enumerate(chosen, start=1):
        distances = tuple(hamming(codes, group[0], p) for p in group)
        groups.append(DuplicateGroup("near", number, tuple(readable[p].index for p in group), distances))
    return groups


def audit_data(
    data: DataBundle,
    workers: int = 0,
    threshold: int = NEAR_THRESHOLD,
    progress: Callable[[int], None] | None = None,
) -> DataAudit:
    """Decode every item of both splits once and collect the findings."""
    items = split_items(data)
    indices = list(items)
    records = scan_images([data.items.paths[i] for i in indices], indices, workers, progress)
    counts = None
    if data.target.vocab:
        counts = ClassCounts(data.class_counts(True), data.class_counts(False))
    return DataAudit(
        root=data.items.root,
        items=items,
        records={r.index: r for r in records},
        exact=exact_groups(records),
        near=near_groups(records, threshold),
        class_counts=counts,
        unused=len(data.items) - len(items),
        threshold=threshold,
    )


# --- what the report shows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DuplicatePair:
    """Two members of a duplicate group, shown side by side; `distance` in bits (0: same hashes)."""

    group: DuplicateGroup
    first: int
    second: int
    distance: int
    leaks: bool


_PAIR_CANDIDATES = 256  # members per split searched for the closest leaking pair (256 x 256 distances)


def _pair_in(audit: DataAudit, group: DuplicateGroup) -> DuplicatePair:
    train = [m for m in group.members if audit.items[m].split == "train"][:_PAIR_CANDIDATES]
    valid = [m for m in group.members if audit.items[m].split == "valid"][:_PAIR_CANDIDATES]
    if train and valid:  # a leak: the closest train/valid pair (the first such pair on ties)
        left = hash_codes([audit.records[m] for m in train])
        right = hash_codes([audit.records[m] for m in valid])
        distances = _popcount(left[:, None, :] ^ right[None, :, :]).sum(axis=2)
        row, col = np.unravel_index(int(distances.argmin()), distances.shape)
        return DuplicatePair(group, train[row], valid[col], int(distances[row, col]), True)
    # otherwise the farthest member from the first: the copy that changed most
    far = max(range(1, len(group.members)), key=lambda n: (group.distances[n], -n))
    return DuplicatePair(group, group.members[0], group.members[far], group.distances[far], False)


def example_pairs(audit: DataAudit, limit: int) -> list[DuplicatePair]:
    """Up to `limit` pairs to look at: leaks first, then near duplicates, then exact ones."""
    leaking = {(g.kind, g.number) for g in audit.leakage}
    ordered = (
        audit.leakage
        + [g for g in audit.near if (g.kind, g.number) not in leaking]
        + [g for g in audit.exact if (g.kind, g.number) not in leaking]
    )
    return [_pair_in(audit, group) for group in ordered[:limit]]


def thumbnail(path: Path, side: int = 192) -> np.ndarray:
    """The image as training decodes it, shrunk to fit side x side: HWC uint8 (grey when unreadable)."""
    from PIL import Image

    try:
        image, _ = read_image(path, lambda size: (side, side))
    except ImageReadError:
        return np.full((side, side, 3), 128, dtype=np.uint8)
    image = image.copy()
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(image)


__all__ = [
    "FINDINGS",
    "HASH_BITS",
    "HASH_SIZE",
    "NEAR_THRESHOLD",
    "TINY_PX",
    "AuditItem",
    "ClassCounts",
    "DataAudit",
    "DuplicateGroup",
    "DuplicatePair",
    "ImageRecord",
    "audit_data",
    "close_pairs",
    "example_pairs",
    "inspect_image",
    "near_groups",
    "scan_images",
    "thumbnail",
]
