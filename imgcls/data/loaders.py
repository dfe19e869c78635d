"""Batches: a sampler that knows the epoch, a collate step that never raises in a worker, and the loaders.

Images stay uint8 until they reach the training device: a 460 px batch of 64 is 41 MB as uint8 and would be
162 MB as float32, and the conversion is free on the GPU.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from imgcls.data.dataset import BadItem, ImageDataset, Sample
from imgcls.errors import DataError, UnreadableImagesError

T = TypeVar("T")


@dataclass
class Batch:
    """Images (N, 3, H, W) uint8 (NHWC in memory), targets, item indices, and items that failed to load."""

    images: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    bad: list[BadItem] = field(default_factory=list)
    error: str | None = None

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pin-memory thread, so the copy to the GPU can be asynchronous."""
        if self.error is not None or len(self.indices) == 0:
            return self
        return Batch(self.images.pin_memory(), self.targets.pin_memory(), self.indices, self.bad, self.error)

    def to(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        non_blocking = device.type == "cuda"
        return (
            self.images.to(device, non_blocking=non_blocking),
            self.targets.to(device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return len(self.indices)


def _size_error(samples: Sequence[Sample], paths: Sequence[str]) -> str:
    first = samples[0][0].shape
    other = next(s for s in samples if s[0].shape != first)
    return (
        f"cannot collate a batch: images have different sizes, e.g. {first[1]}x{first[0]} px "
        f"({paths[samples[0][2]]}) and {other[0].shape[1]}x{other[0].shape[0]} px ({paths[other[2]]}); "
        "add an item transform that makes every image the same size, e.g. "
        "data.item_tfm: {kind: resize, size: 460}"
    )


class Collate:
    """Stack samples into a Batch. Failures are recorded in the Batch, never raised in a worker process,
    so that the main process can report them by file name."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = paths

    def __call__(self, samples: list[Sample | BadItem]) -> Batch:
        bad = [s for s in samples if isinstance(s, BadItem)]
        good = [s for s in samples if not isinstance(s, BadItem)]
        if not good:
            empty = torch.zeros((0, 3, 1, 1), dtype=torch.uint8)
            return Batch(empty, torch.zeros(0), torch.zeros(0, dtype=torch.int64), bad)
        if any(s[0].shape != good[0][0].shape for s in good):
            empty = torch.zeros((0, 3, 1, 1), dtype=torch.uint8)
            return Batch(empty, torch.zeros(0), torch.zeros(0, dtype=torch.int64), bad, _size_error(good, self.paths))
        pixels = torch.from_numpy(np.stack([s[0] for s in good]))
        targets = torch.from_numpy(np.stack([s[1] for s in good]))
        indices = torch.tensor([s[2] for s in good], dtype=torch.int64)
        return Batch(pixels.permute(0, 3, 1, 2), targets, indices, bad)


def check_batch(batch: Batch, on_bad_image: str, skipped: list[BadItem]) -> None:
    """Raise for a collate failure or (unless skipping) an unreadable file; record skipped files."""
    if batch.error is not None:
        raise DataError(batch.error)
    if not batch.bad:
        return
    if on_bad_image == "error":
        raise UnreadableImagesError([(item.path, item.reason) for item in batch.bad])
    skipped.extend(batch.bad)


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (position, epoch) keys.

    Train: a permutation drawn from a generator seeded by (seed, epoch), cut to a multiple of the world size
    and dealt to the ranks, the last partial batch dropped. Valid: in order, dealt round-robin to the ranks,
    nothing dropped or padded, so every item is evaluated exactly once.
    """

    def __init__(self, n_items: int, bs: int, train: bool, seed: int, rank: int = 0, world: int = 1) -> None:
        super().__init__()
        self.n_items, self.bs, self.train, self.seed = n_items, bs, train, seed
        self.rank, self.world = rank, world
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order; `start_batch` > 0 resumes in the middle of it."""
        self.epoch, self.start_batch = epoch, start_batch

    def positions(self) -> np.ndarray:
        if not self.train:
            return np.arange(self.rank, self.n_items, self.world)
        order = np.random.default_rng([self.seed, 1, self.epoch]).permutation(self.n_items)
        usable = len(order) - len(order) % self.world
        return order[:usable][self.rank :: self.world]

    def full_length(self) -> int:
        """Batches in a whole epoch of this rank."""
        n = len(self.positions())
        return n // self.bs if self.train else -(-n // self.bs)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        positions = self.positions()
        for number in range(self.start_batch, self.full_length()):
            chunk = positions[number * self.bs : (number + 1) * self.bs]
            yield [(int(p), self.epoch) for p in chunk]

    def __len__(self) -> int:
        return self.full_length() - self.start_batch


class BalancedBatchSampler(EpochBatchSampler):
    """Training batches drawn with replacement, item i with probability weights[i] / sum(weights).

    Each epoch draws as many positions as there are items, from a generator seeded by (seed, epoch), and deals
    them to the ranks like the permutation: the same on every rank, so the ranks' shards are disjoint slices of
    one draw, and a resumed epoch (start_batch) continues it.
    """

    def __init__(self, weights: np.ndarray, bs: int, seed: int, rank: int = 0, world: int = 1) -> None:
        super().__init__(len(weights), bs, True, seed, rank, world)
        weights = np.asarray(weights, dtype=np.float64)
        if len(weights) == 0 or not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise DataError("the balanced sampler needs finite, non-negative item weights that are not all 0")
        self.p = weights / weights.sum()

    def positions(self) -> np.ndarray:
        drawn = np.random.default_rng([self.seed, 2, self.epoch]).choice(self.n_items, size=self.n_items, p=self.p)
        usable = len(drawn) - len(drawn) % self.world
        return drawn[:usable][self.rank :: self.world]


class FixedBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches given as lists of positions, in order (files to predict, grouped so that each batch collates)."""

    def __init__(self, batches: list[list[int]]) -> None:
        super().__init__()
        self.batches = batches
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for chunk in self.batches[self.start_batch :]:
            yield [(p, self.epoch) for p in chunk]

    def __len__(self) -> int:
        return len(self.batches) - self.start_batch


def default_workers(local_world: int = 1) -> int:
    """min(8, cpus / processes on this machine): beyond ~8 decoding workers a single GPU rarely waits."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus // max(local_world, 1)))


def _ignore_interrupt(_: int) -> None:
    """Workers leave Ctrl-C to the main process, which finishes its batch and saves a checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(
    dataset: ImageDataset, sampler: EpochBatchSampler | FixedBatchSampler, num_workers: int, pin_memory: bool
) -> DataLoader[Batch]:
    return worker_loader(dataset, sampler, num_workers, pin_memory, Collate(dataset.paths))


def worker_loader(
    dataset: Dataset[Any],
    sampler: EpochBatchSampler | FixedBatchSampler,
    num_workers: int,
    pin_memory: bool,
    collate: Callable[[list[Any]], T],
) -> DataLoader[T]:
    """make_loader with any dataset and collate function (data.decode: device collates encoded files)."""
    extra = (
        {"persistent_workers": True, "prefetch_factor": 4, "worker_init_fn": _ignore_interrupt}
        if num_workers > 0
        else {}
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        # Worker seeds come from this generator, not the global one, so that starting workers does not
        # shift the global stream that dropout draws from (a resumed run must draw the same dropout masks).
        generator=torch.Generator().manual_seed(0),
        **extra,  # type: ignore[arg-type]
    )
