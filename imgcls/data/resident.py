"""Device-resident data: every item presized once and kept as one uint8 tensor on the training device.

Batches are then cut from it by index, with no decoding and no worker processes (what the fastest CIFAR-10
trainers do). Items go through the item transform in its validation form (centred windows), so training
randomness comes from the batch augmentation: use augment.min_scale < 1 for random crops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from imgcls.data.dataset import BadItem, ImageDataset
from imgcls.data.loaders import Batch, Collate, EpochBatchSampler, check_batch
from imgcls.errors import DataError

# Share of memory a resident dataset may take: the rest is for the model, its activations and the OS.
MEMORY_SHARE = 0.25


@dataclass
class ResidentData:
    images: torch.Tensor  # (N, 3, H, W) uint8 on the device, channels-last in memory
    targets: torch.Tensor  # on the device
    indices: torch.Tensor  # item indices, on the CPU
    skipped: list[BadItem]  # items that could not be read (data.on_bad_image: skip): not in the tensors

    def __len__(self) -> int:
        return len(self.indices)


def available_bytes(device: torch.device) -> int:
    """What a resident dataset may use on `device`: a share of the GPU's memory, or of the machine's RAM."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(min(MEMORY_SHARE * total, 0.5 * free))
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return int(MEMORY_SHARE * pages * page_size)


def load_resident(dataset: ImageDataset, device: torch.device, workers: int, on_bad_image: str) -> ResidentData:
    """Decode and presize every item of `dataset` once (in worker processes) onto `device`."""
    sampler = EpochBatchSampler(len(dataset), 256, train=False, seed=0)
    loader: DataLoader[Batch] = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=Collate(dataset.paths),
        generator=torch.Generator().manual_seed(0),
    )
    images, targets, indices = [], [], []
    skipped: list[BadItem] = []
    for batch in loader:
        check_batch(batch, on_bad_image, skipped)
        if len(batch):
            images.append(batch.images.to(device))
            targets.append(batch.targets.to(device))
            indices.append(batch.indices)
    if not images:
        raise DataError("no item could be loaded for the resident dataset")
    stacked = torch.cat(images).contiguous(memory_format=torch.channels_last)
    return ResidentData(stacked, torch.cat(targets), torch.cat(indices), skipped)
