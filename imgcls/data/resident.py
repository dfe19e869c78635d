"""Device-resident data: every item presized once and kept as one uint8 tensor on the training device.

Batches are then cut from it by index, with no decoding and no worker processes (what the fastest CIFAR-10
trainers do). Items go through the item transform in its validation form (centred windows), so training
randomness comes from the batch augmentation: use augment.min_scale < 1 for random crops.

The presized tensor is also kept in the presize cache folder, as one safetensors file per split, keyed by every
item's path, size, modification time and encoded target and by the item transform: a second run on the same
data loads it in a fraction of a second instead of decoding every file again (70,000 Fashion-MNIST PNGs:
BENCHMARKS.md §8).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from imgcls.data.cache import transform_key
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


_LAYOUT = 1  # of the stored file: bump when what it holds changes


def resident_key(dataset: ImageDataset) -> str:
    """What the presized tensor depends on: each item's file (path, size, mtime) and target, the transform."""
    digest = hashlib.sha1(f"{_LAYOUT}|{transform_key(dataset.item_tfm)}".encode(), usedforsecurity=False)
    for index in dataset.indices.tolist():
        path = dataset.paths[index]
        try:
            stat = os.stat(path)
            digest.update(f"|{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"|{path}|missing".encode())
    if dataset.targets is not None:
        digest.update(np.ascontiguousarray(dataset.targets.values[dataset.indices]).tobytes())
    return digest.hexdigest()


def _read_stored(file: Path, device: torch.device) -> ResidentData | None:
    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            skipped = [BadItem(*entry) for entry in json.loads((handle.metadata() or {})["skipped"])]
            images, targets, indices = (handle.get_tensor(k) for k in ("images", "targets", "indices"))
    except (OSError, SafetensorError, KeyError, ValueError, TypeError):
        return None  # missing, torn or of another layout: decode again
    stacked = images.to(device).contiguous(memory_format=torch.channels_last)
    return ResidentData(stacked, targets.to(device), indices, skipped)


def _store(file: Path, data: ResidentData) -> None:
    """Write through a temporary file and rename, so that a reader never sees half a file; a full disk only
    costs the cache."""
    file.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=file.parent, prefix=".", suffix=".tmp")
    os.close(handle)
    tensors = {
        "images": data.images.cpu().contiguous(),
        "targets": data.targets.cpu().contiguous(),
        "indices": data.indices.contiguous(),
    }
    skipped = json.dumps([[b.index, b.path, b.reason] for b in data.skipped])
    try:
        save_file(tensors, scratch, metadata={"skipped": skipped})
        os.replace(scratch, file)
    except OSError:
        Path(scratch).unlink(missing_ok=True)


def load_resident(
    dataset: ImageDataset,
    device: torch.device,
    workers: int,
    on_bad_image: str,
    store: Path | None = None,
    writable: bool = True,
) -> ResidentData:
    """Every item of `dataset` presized once onto `device`: read from `store` (the presize cache folder) when it
    holds this exact data, else decoded in worker processes (and kept in `store` when `writable`)."""
    file = store / f"resident-{resident_key(dataset)}.safetensors" if store is not None else None
    if file is not None:
        stored = _read_stored(file, device)
        if stored is not None and (on_bad_image == "skip" or not stored.skipped):
            return stored
    data = _decode(dataset, device, workers, on_bad_image)
    if file is not None and writable:
        _store(file, data)
    return data


def _decode(dataset: ImageDataset, device: torch.device, workers: int, on_bad_image: str) -> ResidentData:
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
