"""The evaluation pass: a model over batches, exactly once per item, in item order.

One pass serves validation during training, TTA, interpret and predict: it keeps the raw outputs, the targets as
the batch transform left them (points moved with the pixels) and the sampling map of every image, so that point
predictions can be carried between frames and back to the original pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, UnidentifiedImageError
from torch import nn

from imgcls.augment.loader import BatchSource
from imgcls.augment.pipeline import BatchAugment, BatchGeometry
from imgcls.data.datablock import DataBundle
from imgcls.data.images import oriented_size
from imgcls.data.item_tfms import Window, item_to_source
from imgcls.errors import ImageReadError
from imgcls.report.console import Console
from imgcls.targets.base import Evaluated
from imgcls.train.builder import Pipeline
from imgcls.train.losses import Loss
from imgcls.train.metrics import Metric
from imgcls.train.runtime import Runtime


@dataclass
class Predictions:
    """Raw outputs (N, n_out), targets, item indices and the geometry of each image, on the CPU."""

    outputs: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    geometry: BatchGeometry

    def __len__(self) -> int:
        return len(self.indices)

    def sorted(self) -> Predictions:
        order = torch.argsort(self.indices)
        return Predictions(self.outputs[order], self.targets[order], self.indices[order], self.geometry.select(order))


def _empty() -> Predictions:
    return Predictions(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.int64), BatchGeometry.cat([]))


def _gather(local: Predictions) -> Predictions:
    """Every rank's shard, on every rank (validation shards are disjoint, so nothing is counted twice)."""
    shards: list[Predictions | None] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, local)
    parts = [s for s in shards if s is not None and len(s) > 0]
    if not parts:
        return _empty()
    return Predictions(
        torch.cat([p.outputs for p in parts]),
        torch.cat([p.targets for p in parts]),
        torch.cat([p.indices for p in parts]),
        BatchGeometry.cat([p.geometry for p in parts]),
    )


def evaluate(
    model: nn.Module,
    batches: BatchSource,
    runtime: Runtime,
    console: Console | None = None,
    description: str = "validation",
) -> Predictions:
    """Run `model` (in eval mode) over every batch; under DDP each rank evaluates its shard and all gather."""
    model.eval()
    outputs, targets, indices, geometries = [], [], [], []
    batches.set_epoch(0)
    if console is not None:
        console.start_bar(len(batches), description)
    try:
        with torch.inference_mode(), runtime.autocast(evaluating=True):
            for batch in batches:
                outputs.append(model(batch.images).float().cpu())
                targets.append(batch.targets.cpu())
                indices.append(batch.indices.cpu())
                if batch.geometry is not None:
                    geometries.append(batch.geometry.cpu())
                if console is not None:
                    console.advance_bar()
    finally:
        if console is not None:
            console.stop_bar()
    local = _empty()
    if outputs:
        n = sum(len(o) for o in outputs)
        # Batches made without a batch transform (synthetic ones in tests) were not resampled: the identity.
        geometry = BatchGeometry.cat(geometries) if len(geometries) == len(outputs) else BatchGeometry.identity(n)
        local = Predictions(torch.cat(outputs), torch.cat(targets), torch.cat(indices), geometry)
    if runtime.distributed:
        local = _gather(local)
    return local.sorted()


def compute_metrics(predictions: Predictions, loss: Loss, metrics: list[Metric]) -> dict[str, float]:
    """valid_loss (the mean over items) and every metric over the whole set."""
    row = {"valid_loss": float(loss.per_item(predictions.outputs, predictions.targets).mean())}
    for metric in metrics:
        row[metric.name] = metric.fn(predictions.outputs, predictions.targets)
    return row


# --- what the reports read ------------------------------------------------------------------------------------


def _source_frames(data: DataBundle, indices: torch.Tensor) -> tuple[list[tuple[int, int]], list[Window | None]]:
    """Each item's original (width, height), from its header, and its validation item window."""
    sizes: list[tuple[int, int]] = []
    windows: list[Window | None] = []
    for item in indices.tolist():
        path = data.items.paths[int(item)]
        try:
            with Image.open(path) as image:
                size = oriented_size(image)
        except (OSError, UnidentifiedImageError) as err:
            raise ImageReadError(str(path), str(err)) from None
        sizes.append(size)
        windows.append(data.item_tfm.window(size, None) if data.item_tfm is not None else None)
    return sizes, windows


def evaluated(predictions: Predictions, pipeline: Pipeline, augment: BatchAugment) -> Evaluated:
    """A validation pass with everything the target's reports read: item names, per-item losses, the images
    as the model saw them (read in the run's data mode, through `augment`), and for spatial targets the map back
    to the original images' pixels."""
    data = pipeline.data
    target = data.target
    indices = predictions.indices
    device = pipeline.runtime.device

    def images(positions: Sequence[int]) -> list[np.ndarray]:
        pixels = pipeline.source.pictures([int(indices[p]) for p in positions])
        x, _ = augment(pixels.to(device), train=False)
        return augment.to_display(x)

    result = Evaluated(
        outputs=predictions.outputs,
        targets=predictions.targets,
        losses=pipeline.loss.per_item(predictions.outputs, predictions.targets),
        names=[data.items.relative(int(i)) for i in indices],
        input_size=augment.size,
        thresh=pipeline.thresh,
        images=images,
        decision=pipeline.decision,
    )
    if target.spatial:
        sizes, windows = _source_frames(data, indices)
        geometry = predictions.geometry

        def to_source(points: np.ndarray) -> np.ndarray:
            in_items = geometry.to_input(torch.as_tensor(points, dtype=torch.float32)).numpy()
            return np.stack([item_to_source(p, w, s) for p, w, s in zip(in_items, windows, sizes, strict=True)])

        result.to_source = to_source
        result.stored = data.targets.values[indices.numpy()]
        result.source_sizes = sizes
    return result
