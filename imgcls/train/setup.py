"""Building what a run trains with: loaders per stage, the normalizer, the model on its device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from PIL import Image
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from imgcls.augment.loader import BatchSource, DeviceLoader, ResidentLoader
from imgcls.augment.pipeline import IMAGENET, BatchAugment, Normalizer
from imgcls.data.cache import PresizeCache, has_random_window
from imgcls.data.datablock import DataBundle
from imgcls.data.demo import imgcls_home
from imgcls.data.images import oriented_size
from imgcls.data.loaders import EpochBatchSampler, default_workers, make_loader
from imgcls.data.resident import ResidentData, available_bytes, load_resident
from imgcls.errors import DataError
from imgcls.models.factory import ARCHITECTURES
from imgcls.spec.data import NormStats
from imgcls.spec.schema import Spec
from imgcls.train.runtime import Runtime

# Epoch key of the batches `normalize: measure` reads: far from any training epoch's key.
_MEASURE_KEY = 999_999_999


@dataclass(frozen=True)
class StageLoaders:
    train: BatchSource
    valid: BatchSource
    size: tuple[int, int] | None
    bs: int


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
    """How batches reach the device: decoded every epoch (stream), read from the presize cache (cache), or
    cut from a device-resident tensor (resident, loaded once and shared by every stage)."""

    def __init__(self, spec: Spec, data: DataBundle, runtime: Runtime) -> None:
        self.spec, self.data, self.runtime = spec, data, runtime
        self.mode, self.reason = resolve_mode(spec, data, runtime)
        folder = Path(spec.data.cache_dir).expanduser() if spec.data.cache_dir else imgcls_home() / "cache"
        self.cache_dir = folder
        self._resident: dict[bool, ResidentData] = {}

    def loader(self, train: bool, sampler: EpochBatchSampler, augment: BatchAugment) -> BatchSource:
        spec, runtime = self.spec, self.runtime
        options = {"train": train, "seed": spec.seed, "channels_last": runtime.channels_last}
        if self.mode == "resident":
            return ResidentLoader(self.resident(train), sampler, augment, **options)  # type: ignore[arg-type]
        cache = PresizeCache(self.cache_dir, self.data.item_tfm, train) if self.mode == "cache" else None
        dataset = self.data.dataset(train, spec.seed, cache=cache)
        loader = make_loader(dataset, sampler, worker_count(spec, runtime), runtime.device.type == "cuda")
        return DeviceLoader(loader, sampler, augment, runtime.device, on_bad_image=spec.data.on_bad_image, **options)  # type: ignore[arg-type]

    def resident(self, train: bool) -> ResidentData:
        if train not in self._resident:
            # Every item in its validation form: deterministic, so it can be presized once.
            dataset = self.data.dataset(train, self.spec.seed, randomized=False)
            workers = worker_count(self.spec, self.runtime)
            self._resident[train] = load_resident(dataset, self.runtime.device, workers, self.spec.data.on_bad_image)
        return self._resident[train]


def stage_loaders(source: DataSource, augment: BatchAugment, size: tuple[int, int] | None, bs: int) -> StageLoaders:
    """Train and valid loaders for one stage: its own final size and batch size."""
    spec, data, runtime = source.spec, source.data, source.runtime
    n_train = len(data.split.train)
    if bs * runtime.world > n_train:
        raise DataError(
            f"the batch size {bs} x {runtime.world} process(es) is larger than the training set ({n_train} items)",
            hint="lower data.bs (or the stage's bs); the last partial training batch is always dropped",
        )
    staged = augment.with_size(size)
    loaders = []
    for train in (True, False):
        n_items = len(data.split.train if train else data.split.valid)
        batch = bs if train else (spec.data.val_bs or bs)
        sampler = EpochBatchSampler(n_items, batch, train, spec.seed, runtime.rank, runtime.world)
        loaders.append(source.loader(train, sampler, staged))
    return StageLoaders(loaders[0], loaders[1], size, bs)


def pretrained_stats(spec: Spec) -> Normalizer:
    """The statistics the pretrained weights were trained with (timm's pretrained_cfg), ImageNet's otherwise."""
    if spec.model.arch in ARCHITECTURES or not timm.is_model(spec.model.arch):
        return IMAGENET
    config = timm.models.get_pretrained_cfg(spec.model.arch)
    if config is None or config.mean is None or config.std is None:
        return IMAGENET
    return Normalizer(tuple(config.mean), tuple(config.std))


def measure_stats(loader: BatchSource, n_batches: int) -> Normalizer:
    """Per-channel mean and std over `n_batches` augmented training batches (fastai measures one batch)."""
    total = total_sq = None
    count = 0
    loader.set_epoch(_MEASURE_KEY)
    for number, batch in enumerate(loader):
        if number == n_batches:
            break
        x = batch.images.double()
        sums, sq = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        total = sums if total is None else total + sums
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if total is None or total_sq is None:
        raise DataError("normalize: measure found no training batch to measure")
    mean = total / count
    std = torch.sqrt((total_sq / count - mean * mean).clamp(min=0)) + 1e-7
    return Normalizer(tuple(mean.tolist()), tuple(std.tolist()))


def resolve_normalizer(spec: Spec, first_stage: Callable[[], StageLoaders]) -> Normalizer | None:
    """The normalization the spec asks for; `first_stage` builds loaders only when statistics are measured."""
    choice = spec.data.normalize
    if isinstance(choice, NormStats):
        return Normalizer(tuple(choice.mean), tuple(choice.std))
    if choice == "imagenet":
        return IMAGENET
    if choice == "measure":
        return measure_stats(first_stage().train, spec.data.normalize_batches)
    if choice == "auto" and (spec.model.pretrained or spec.model.weights):
        return pretrained_stats(spec)
    return None


def place_model(model: nn.Module, runtime: Runtime, sync_bn: bool = False) -> nn.Module:
    """Move to the device (channels_last if asked); batch norm synchronised across ranks if asked."""
    if sync_bn and runtime.distributed and runtime.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def wrap_model(model: nn.Module, runtime: Runtime) -> nn.Module:
    """DDP and torch.compile around the placed model, once per phase: DDP only reduces the gradients of
    parameters that require them when it is built, so a freeze or unfreeze needs a fresh wrapper."""
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids)
    if runtime.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    return model
