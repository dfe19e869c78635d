"""One pass of a model over a loader that also keeps the geometry each image was resampled with, so that
point predictions can be carried between frames (TTA of point models, errors in original pixels)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from imgcls.augment.loader import DeviceBatch, DeviceLoader, batch_seed
from imgcls.augment.pipeline import BatchGeometry
from imgcls.data.loaders import check_batch
from imgcls.report.console import Console
from imgcls.train.runtime import Runtime


@dataclass
class GeometryBatch(DeviceBatch):
    geometry: BatchGeometry | None = None


class GeometryLoader(DeviceLoader):
    """A DeviceLoader whose batches carry their BatchGeometry (the same draws as DeviceLoader's)."""

    @classmethod
    def like(cls, loader: DeviceLoader) -> GeometryLoader:
        return cls(
            loader.loader,
            loader.sampler,
            loader.augment,
            loader.device,
            train=loader.train,
            seed=loader.seed,
            on_bad_image=loader.on_bad_image,
            channels_last=loader.channels_last,
        )

    def __iter__(self) -> Iterator[GeometryBatch]:
        number = self.sampler.start_batch
        for batch in self.loader:
            check_batch(batch, self.on_bad_image, self.skipped)
            if len(batch) == 0:
                number += 1
                continue
            seed = batch_seed(self.seed, self.epoch_key, number)
            number += 1
            images, targets = batch.to(self.device)
            if self.generator is not None:
                self.generator.manual_seed(seed)
            points = targets if targets.ndim == 3 else None
            x, moved, geometry = self.augment.with_geometry(images, points, train=self.train, generator=self.generator)
            if moved is not None:
                targets = moved
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield GeometryBatch(x, targets, batch.indices, seed, geometry)


@dataclass
class Pass:
    """Raw outputs, targets (moved like the images for points), item indices and the geometry, on the CPU,
    sorted by item index."""

    outputs: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    geometry: BatchGeometry

    def __len__(self) -> int:
        return len(self.indices)


def geometry_pass(
    model: nn.Module,
    loader: DeviceLoader,
    runtime: Runtime,
    console: Console | None = None,
    description: str = "predict",
) -> Pass:
    """Evaluate `model` (eval mode) on every batch of `loader`, keeping each batch's geometry."""
    source = GeometryLoader.like(loader)
    source.set_epoch(0)
    model.eval()
    outputs, targets, indices, matrices, homographies = [], [], [], [], []
    if console is not None:
        console.start_bar(len(source), description)
    try:
        with torch.inference_mode(), runtime.autocast():
            for batch in source:
                outputs.append(model(batch.images).float().cpu())
                targets.append(batch.targets.cpu())
                indices.append(batch.indices.cpu())
                assert batch.geometry is not None
                matrices.append(batch.geometry.matrices.cpu())
                if batch.geometry.homography is not None:
                    homographies.append(batch.geometry.homography.cpu())
                if console is not None:
                    console.advance_bar()
    finally:
        if console is not None:
            console.stop_bar()
    loader.skipped.extend(source.skipped)
    if not outputs:
        empty = torch.zeros(0)
        return Pass(empty, empty, torch.zeros(0, dtype=torch.int64), BatchGeometry(torch.zeros(0, 3, 3)))
    order = torch.argsort(torch.cat(indices))
    homography = torch.cat(homographies)[order] if len(homographies) == len(matrices) else None
    return Pass(
        torch.cat(outputs)[order],
        torch.cat(targets)[order],
        torch.cat(indices)[order],
        BatchGeometry(torch.cat(matrices)[order], homography),
    )


def as_points(outputs: torch.Tensor) -> torch.Tensor:
    """(N, 2P) model outputs -> (N, P, 2) points."""
    return outputs.reshape(outputs.shape[0], -1, 2)


def between_frames(points: torch.Tensor, source: BatchGeometry, target: BatchGeometry) -> torch.Tensor:
    """Points (N, P, 2) in the output frame of `source` -> the output frame of `target`, both resampled from the
    same input: back through the sampling map that made the first, forward through the second."""
    return target.to_output(source.to_input(points))
