"""How batches reach the device (`data.mode`): decoded every epoch, read from the presize cache, or cut from a
device-resident tensor. Every command that reads the data gets its batches here, so the mode is honoured alike
by training, lr-find, tta-eval, interpret and predict on the validation set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from imgcls.augment.decode import DecodingLoader
from imgcls.augment.loader import BatchOptions, BatchSource, DeviceLoader, ResidentLoader
from imgcls.augment.pipeline import BatchAugment
from imgcls.data.cache import PresizeCache, has_random_window
from imgcls.data.datablock import DataBundle
from imgcls.data.dataset import BadItem
from imgcls.data.demo import imgcls_home
from imgcls.data.encoded import EncodedCollate, EncodedDataset
from imgcls.data.images import oriented_size
from imgcls.data.loaders import (
    BalancedBatchSampler,
    Collate,
    EpochBatchSampler,
    default_workers,
    make_loader,
    worker_loader,
)
from imgcls.data.resident import ResidentData, available_bytes, load_resident
from imgcls.errors import DataError
from imgcls.report.console import Console
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

    def __init__(self, spec: Spec, data: DataBundle, runtime: Runtime, writes_cache: bool = True) -> None:
        self.spec, self.data, self.runtime = spec, data, runtime
        self.writes_cache = writes_cache  # evaluating a run reads its presize cache and writes nothing there
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
        options = BatchOptions(augment_train, seed, runtime.channels_last, data.target.spatial)
        if self.mode == "resident":
            # Sampled over what was loaded: items that could not be read are not in the tensor.
            resident = self.resident(train)
            return ResidentLoader(resident, self.sampler(len(resident), bs, train), augment, options)
        sampler = self.sampler(len(data.split.train if train else data.split.valid), bs, train)
        cache = self._cache(random_items)
        dataset = data.dataset(train, seed, randomized=random_items, cache=cache)
        if spec.data.decode == "device":
            return self._decoding(EncodedDataset(dataset), sampler, augment, options)
        loader = make_loader(dataset, sampler, worker_count(spec, runtime), runtime.device.type == "cuda")
        return DeviceLoader(loader, sampler, augment, runtime.device, options, spec.data.on_bad_image)

    def scan(self, console: Console | None = None) -> list[BadItem]:
        """Read every item once (data.on_bad_image: skip decides before sampling): the resident tensors are
        loaded, the presize cache is filled, and in stream mode each file is decoded at the reduced JPEG scale
        its item transform needs. Returns the items that cannot be read."""
        bad: list[BadItem] = []
        for train in (True, False):
            if self.mode == "resident":
                bad.extend(self.resident(train).skipped)
                continue
            dataset = self.data.dataset(train, self.spec.seed, cache=self._cache(train))
            sampler = EpochBatchSampler(len(dataset), 64, train=False, seed=0)
            loader = make_loader(dataset, sampler, worker_count(self.spec, self.runtime), pin_memory=False)
            if console is not None:
                console.start_bar(len(sampler), f"reading the {'training' if train else 'validation'} images")
            try:
                for batch in loader:
                    bad.extend(batch.bad)
                    if console is not None:
                        console.advance_bar()
            finally:
                if console is not None:
                    console.stop_bar()
        return sorted(bad, key=lambda item: item.index)

    def _decoding(
        self, dataset: EncodedDataset, sampler: EpochBatchSampler, augment: BatchAugment, options: BatchOptions
    ) -> DecodingLoader:
        """data.decode: device: workers read bytes and plan windows, the device decodes and cuts (augment/decode.py)."""
        runtime = self.runtime
        workers = worker_count(self.spec, runtime)
        collate = EncodedCollate(dataset.paths)
        loader = worker_loader(dataset, sampler, workers, runtime.device.type == "cuda", collate)
        return DecodingLoader(loader, sampler, augment, runtime.device, options, self.spec.data.on_bad_image)

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
        dataset = self.data.dataset(False, self.spec.seed, cache=self._cache(False))
        where = {int(item): number for number, item in enumerate(dataset.indices)}
        samples = [dataset[(where[int(item)], 0)] for item in items]
        for sample in samples:
            if isinstance(sample, BadItem):  # it was read a moment ago; a file changed under us
                raise DataError(f"cannot read {sample.path}: {sample.reason}")
        batch = Collate(dataset.paths)(samples)
        if batch.error is not None:
            raise DataError(batch.error)
        return batch.images

    def _cache(self, random_windows: bool) -> PresizeCache | None:
        if self.mode != "cache":
            return None
        return PresizeCache(self.cache_dir, self.data.item_tfm, random_windows, writable=self.writes_cache)

    def resident(self, train: bool) -> ResidentData:
        if train not in self._resident:
            # Every item in its validation form: deterministic, so it can be presized once.
            dataset = self.data.dataset(train, self.spec.seed, randomized=False)
            workers = worker_count(self.spec, self.runtime)
            self._resident[train] = load_resident(
                dataset,
                self.runtime.device,
                workers,
                self.spec.data.on_bad_image,
                store=self.cache_dir / "resident",
                writable=self.writes_cache,
            )
        return self._resident[train]
