"""Where the CPU pipeline meets the device: uint8 batches are copied over, then augmented there.

Every training batch gets its own seed, derived from (run seed, epoch key, batch number), for the device
generator that draws its augmentation parameters and for callbacks (MixUp) that need randomness. So a run
resumed at batch k draws exactly what the original run drew at batch k, with no generator state to save.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.utils.data import DataLoader

from imgcls.augment.pipeline import BatchAugment, BatchGeometry
from imgcls.data.dataset import BadItem
from imgcls.data.loaders import Batch, EpochBatchSampler, FixedBatchSampler, check_batch
from imgcls.data.resident import ResidentData


@dataclass
class DeviceBatch:
    images: torch.Tensor  # float, augmented, normalized, on the device
    targets: torch.Tensor
    indices: torch.Tensor  # item indices (CPU)
    seed: int
    # The sampling map each image was resampled with: TTA and predict carry point predictions between frames.
    geometry: BatchGeometry | None = None


def batch_seed(seed: int, epoch_key: int, batch: int) -> int:
    return ((seed * 1_000_003 + epoch_key) * 1_000_003 + batch) % (1 << 62)


class BatchSource(Protocol):
    """What the loop iterates: a streaming DataLoader here, or a device-resident dataset (data.mode)."""

    def set_epoch(self, epoch_key: int, start_batch: int = 0) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[DeviceBatch]: ...


@dataclass(frozen=True)
class BatchOptions:
    """How a source augments: training draws (train), their seed, the memory format, and whether targets are
    points that move with the pixels (spatial)."""

    train: bool
    seed: int
    channels_last: bool = False
    spatial: bool = False


class _AugmentingSource:
    """What both batch sources share: the sampler's epoch, the per-batch seed and the batch transform."""

    def __init__(
        self,
        sampler: EpochBatchSampler | FixedBatchSampler,
        augment: BatchAugment,
        device: torch.device,
        options: BatchOptions,
    ) -> None:
        self.sampler, self.augment, self.device = sampler, augment, device
        self.train, self.seed, self.channels_last = options.train, options.seed, options.channels_last
        self.spatial = options.spatial
        self.generator = torch.Generator(device=device) if options.train else None
        self.epoch_key = 0

    def set_epoch(self, epoch_key: int, start_batch: int = 0) -> None:
        self.epoch_key = epoch_key
        self.sampler.set_epoch(epoch_key, start_batch)

    def __len__(self) -> int:
        return len(self.sampler)

    def augmented(self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, number: int) -> DeviceBatch:
        """Batch `number` of the epoch through the batch transform; point targets (N, P, 2) follow it."""
        seed = batch_seed(self.seed, self.epoch_key, number)
        if self.generator is not None:
            self.generator.manual_seed(seed)
        points = targets if self.spatial and targets.ndim == 3 else None
        x, moved, geometry = self.augment.with_geometry(images, points, train=self.train, generator=self.generator)
        if moved is not None:
            targets = moved
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return DeviceBatch(x, targets, indices, seed, geometry)


class DeviceLoader(_AugmentingSource):
    """Iterates a DataLoader of uint8 Batches and yields augmented DeviceBatches on `device`."""

    def __init__(
        self,
        loader: DataLoader[Batch],
        sampler: EpochBatchSampler | FixedBatchSampler,
        augment: BatchAugment,
        device: torch.device,
        options: BatchOptions,
        on_bad_image: str = "error",
    ) -> None:
        super().__init__(sampler, augment, device, options)
        self.loader, self.on_bad_image = loader, on_bad_image
        self.skipped: list[BadItem] = []

    def __iter__(self) -> Iterator[DeviceBatch]:
        for number, batch in enumerate(self.loader, start=self.sampler.start_batch):
            check_batch(batch, self.on_bad_image, self.skipped)
            if len(batch):
                images, targets = batch.to(self.device)
                yield self.augmented(images, targets, batch.indices, number)


class ResidentLoader(_AugmentingSource):
    """Batches cut from a device-resident dataset, in the same order a DeviceLoader would deliver them."""

    def __init__(
        self,
        data: ResidentData,
        sampler: EpochBatchSampler,
        augment: BatchAugment,
        options: BatchOptions,
    ) -> None:
        super().__init__(sampler, augment, data.images.device, options)
        self.data = data

    def __iter__(self) -> Iterator[DeviceBatch]:
        for number, keys in enumerate(self.sampler, start=self.sampler.start_batch):
            positions = torch.tensor([p for p, _ in keys], dtype=torch.int64)
            on_device = positions.to(self.device, non_blocking=True)
            images, targets = self.data.images[on_device], self.data.targets[on_device]
            yield self.augmented(images, targets, self.data.indices[positions], number)
