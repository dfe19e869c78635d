"""How batches reach the device (`data.mode`): decoded every epoch, read from the presize cache, or cut from a
device-resident tensor. Every command that reads the data gets its batches here, so the mode is honoured alike
by training, lr-find, tta-eval, interpret and predict on the validation set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from imgcls.augment.loader import BatchOptions, BatchSource, DeviceLoader, ResidentLoader
from imgcls.augment.pipeline import BatchAugment
from imgcls.data.cache import PresizeCache, has_random_window
from imgcls.data.datablock import DataBundle
from imgcls.data.dataset import BadItem
from imgcls.data.demo import imgcls_home
from imgcls.data.images import oriented_size
from imgcls.data.loaders import BalancedBatchSampler, Collate, EpochBatchSampler, default_workers, make_loader
from imgcls.data.resident import ResidentData, available_bytes, load_resident
from imgcls.errors import DataError
from imgcls.spec.schema import Spec
from imgcls.train.runtime import Runtime

Split = Literal["train", "valid"]


def worker_count(spec: Spec, runtime: Runtime) -> int:
    workers = spec.data.num_workers
    return default_workers(runtime.local_world) if workers == "auto" else workers


def _item_bytes(data: DataBundle) -> int:
    """Bytes of one presized item (the first image's size when there is no item transform)."""
    if data.item_tfm is not None:
        height, width = data.item_tfm.size
    else:
        with Image.open(data.items.paths[int(data.split.train[0])]) as image:
            width, height = oriented_size(image)
    return height * width * 3


def resolve_mode(spec: Spec, data: DataBundle, runtime: Runtime) -> tuple[str, str]:
    """The data mode and why. auto picks resident only where it cannot change results: the training item
    transform has no random window, and the presized dataset fits the memory budget."""
    if spec.data.mode != "auto":
        return spec.data.mode, "as the spec asks"
    if has_random_window(data.item_tfm):
        return "stream", "the training item transform draws random windows"
    needed = (len(data.split.train) + len(data.split.valid)) * _item_bytes(data)
    budget = available_bytes(runtime.device)
    if needed > budget:
        return "stream", f"{needed / 2**20:.0f} MiB would not fit the {budget / 2**20:.0f} MiB budget"
    return "resident", f"{needed / 2**20:.0f} MiB fit the {budget / 2**20:.0f} MiB budget"


class DataSource:
    """Batches of one split in the run's data mode; a resident split is loaded once and shared by every stage."""

    def __init__(self, spec: Spec, data: DataBundle, runtime: Runtime) -> None:
        self.spec, self.data, self.runtime = spec, data, runtime
        self.mode, self.reason = resolve_mode(spec, data, runtime)
        folder = Path(spec.data.cache_dir).expanduser() if spec.data.cache_dir else imgcls_home() / "cache"
        self.cache_dir = folder
        self._resident: dict[bool, ResidentData] = {}

    def batches(
        self,
        split: Split,
        bs: int,
        augment: BatchAugment,
        *,
        augment_train: bool | None = None,
        random_items: bool | None = None,
        seed_offset: int = 0,
    ) -> BatchSource:
        """The split's batches through `augment`. Training batches are shuffled (the last partial one dropped)
        and augmented with random item windows; validation ones are in order, whole, and only resized.
        `augment_train` and `random_items` override the last two (TTA's augmented passes over the validation
        set); `seed_offset` gives such a pass its own random draws."""
        spec, runtime, data = self.spec, self.runtime, self.data
        train = split == "train"
        augment_train = train if augment_train is None else augment_train
        random_items = train if random_items is None else random_items
        seed = spec.seed + seed_offset
        n_items = len(data.split.train if train else data.split.valid)
        sampler = self.sampler(n_items, bs, train)
        options = BatchOptions(augment_train, seed, runtime.channels_last, data.target.spatial)
        if self.mode == "resident":
            return ResidentLoader(self.resident(train), sampler, augment, options)
        cache = PresizeCache(self.cache_dir, data.item_tfm, random_items) if self.mode == "cache" else None
        dataset = data.dataset(train, seed, randomized=random_items, cache=cache)
        loader = make_loader(dataset, sampler, worker_count(spec, runtime), runtime.device.type == "cuda")
        return DeviceLoader(loader, sampler, augment, runtime.device, options, spec.data.on_bad_image)

    def sampler(self, n_items: int, bs: int, train: bool) -> EpochBatchSampler:
        """Which items each batch holds: a per-epoch permutation, or with data.sampler: balanced (training only)
        a draw in which every class is equally likely (the target block weighs the items)."""
        spec, runtime = self.spec, self.runtime
        if train and spec.data.sampler == "balanced":
            values = self.data.targets.values[self.data.split.train]
            weights = self.data.target.balancing_weights(values)
            return BalancedBatchSampler(weights, bs, spec.seed, runtime.rank, runtime.world)
        return EpochBatchSampler(n_items, bs, train, spec.seed, runtime.rank, runtime.world)

    def pictures(self, items: Sequence[int]) -> torch.Tensor:
        """Validation items (item indices) after the item transform's validation form, as one uint8 (N, 3, H, W)
        batch read in the run's data mode (interpret draws them as the model saw them)."""
        if self.mode == "resident":
            resident = self.resident(False)
            where = {int(item): number for number, item in enumerate(resident.indices.tolist())}
            positions = torch.tensor([where[int(item)] for item in items], dtype=torch.int64)
            return resident.images[positions.to(resident.images.device)].cpu()
        cache = PresizeCache(self.cache_dir, self.data.item_tfm, False) if self.mode == "cache" else None
        dataset = self.data.dataset(False, self.spec.seed, cache=cache)
        where = {int(item): number for number, item in enumerate(dataset.indices)}
        samples = [dataset[(where[int(item)], 0)] for item in items]
        for sample in samples:
            if isinstance(sample, BadItem):  # it was read a moment ago; a file changed under us
                raise DataError(f"cannot read {sample.path}: {sample.reason}")
        batch = Collate(dataset.paths)(samples)
        if batch.error is not None:
            raise DataError(batch.error)
        return batch.images

    def resident(self, train: bool) -> ResidentData:
        if train not in self._resident:
            # Every item in its validation form: deterministic, so it can be presized once.
            dataset = self.data.dataset(train, self.spec.seed, randomized=False)
            workers = worker_count(self.spec, self.runtime)
            self._resident[train] = load_resident(dataset, self.runtime.device, workers, self.spec.data.on_bad_image)
        return self._resident[train]
