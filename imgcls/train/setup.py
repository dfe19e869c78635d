"""Building what a run trains with: loaders per stage, the normalizer, the model on its device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from imgcls.augment.loader import DeviceLoader
from imgcls.augment.pipeline import IMAGENET, BatchAugment, Normalizer
from imgcls.data.datablock import DataBundle
from imgcls.data.loaders import EpochBatchSampler, default_workers, make_loader
from imgcls.errors import DataError
from imgcls.models.factory import ARCHITECTURES
from imgcls.spec.data import NormStats
from imgcls.spec.schema import Spec
from imgcls.train.runtime import Runtime

# Epoch key of the batches `normalize: measure` reads: far from any training epoch's key.
_MEASURE_KEY = 999_999_999


@dataclass(frozen=True)
class StageLoaders:
    train: DeviceLoader
    valid: DeviceLoader
    size: tuple[int, int] | None
    bs: int


def worker_count(spec: Spec, runtime: Runtime) -> int:
    workers = spec.data.num_workers
    return default_workers(runtime.local_world) if workers == "auto" else workers


def stage_loaders(
    spec: Spec,
    data: DataBundle,
    runtime: Runtime,
    augment: BatchAugment,
    size: tuple[int, int] | None,
    bs: int,
    world: tuple[int, int] | None = None,
) -> StageLoaders:
    """Train and valid loaders for one stage: its own final size and batch size."""
    rank, n_ranks = world if world is not None else (runtime.rank, runtime.world)
    n_train = len(data.split.train)
    if bs * n_ranks > n_train:
        raise DataError(
            f"the batch size {bs} x {n_ranks} process(es) is larger than the training set ({n_train} items)",
            hint="lower data.bs (or the stage's bs); the last partial training batch is always dropped",
        )
    workers = worker_count(spec, runtime)
    pin = runtime.device.type == "cuda"
    staged = augment.with_size(size)
    loaders = []
    for train in (True, False):
        dataset = data.dataset(train, spec.seed)
        sampler = EpochBatchSampler(
            len(dataset), bs if train else (spec.data.val_bs or bs), train, spec.seed, rank, n_ranks
        )
        loader = make_loader(dataset, sampler, workers, pin)
        loaders.append(
            DeviceLoader(
                loader,
                sampler,
                staged,
                runtime.device,
                train=train,
                seed=spec.seed,
                on_bad_image=spec.data.on_bad_image,
                channels_last=runtime.channels_last,
            )
        )
    return StageLoaders(loaders[0], loaders[1], size, bs)


def pretrained_stats(spec: Spec) -> Normalizer:
    """The statistics the pretrained weights were trained with (timm's pretrained_cfg), ImageNet's otherwise."""
    if spec.model.arch in ARCHITECTURES or not timm.is_model(spec.model.arch):
        return IMAGENET
    config = timm.models.get_pretrained_cfg(spec.model.arch)
    if config is None or config.mean is None or config.std is None:
        return IMAGENET
    return Normalizer(tuple(config.mean), tuple(config.std))


def measure_stats(loader: DeviceLoader, n_batches: int) -> Normalizer:
    """Per-channel mean and std over `n_batches` augmented training batches (fastai measures one batch)."""
    total = total_sq = None
    count = 0
    loader.set_epoch(_MEASURE_KEY)
    plain = loader.augment.with_normalizer(None)
    for number, batch in enumerate(loader.loader):
        if number == n_batches:
            break
        images, _ = batch.to(loader.device)
        x, _ = plain(images, train=True, generator=loader.generator)
        x = x.double()
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
