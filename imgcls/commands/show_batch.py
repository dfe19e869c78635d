"""`imgcls show-batch`: augmented (or validation) images of a stage as the model sees them, with their labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imgcls.commands.summary import check_stage, sample_positions
from imgcls.data.datablock import DataBundle, build_data
from imgcls.data.dataset import BadItem
from imgcls.data.loaders import Collate
from imgcls.errors import DataError
from imgcls.report.console import Console
from imgcls.report.plots import image_grid
from imgcls.spec.schema import Spec
from imgcls.targets.base import grid_columns
from imgcls.train.builder import batch_augment, normalizer_plan, stage_size


@dataclass
class BatchView:
    """Pictures of a batch as the model sees it (HWC uint8, HW for grey models), their labels, points in pixels."""

    images: list[np.ndarray]
    titles: list[str]
    points: list[list[np.ndarray]] | None


def batch_view(
    spec: Spec, data: DataBundle, console: Console, n: int = 9, valid: bool = False, stage: int = 1, seed: int = 0
) -> BatchView:
    """`n` items drawn at random (seeded by `seed`) from the training or validation set, through the 1-based
    `stage`'s batch transform (its size, the model's channels), with their labels."""
    index = check_stage(spec, stage)
    dataset = data.dataset(train=not valid, seed=spec.seed)
    samples = [dataset[(p, 0)] for p in sample_positions(len(dataset), n, seed)]
    for item in (s for s in samples if isinstance(s, BadItem)):
        console.warn(f"cannot read {item.path}: {item.reason} (not shown)")
    batch = Collate(dataset.paths)(samples)
    if batch.error is not None:
        raise DataError(batch.error)
    if len(batch) == 0:
        raise DataError("none of the images in this batch could be read")
    # Statistics fixed by the spec are applied (and undone for display); measured ones are not known here,
    # and display is the same either way.
    augment = batch_augment(spec.augment, stage_size(spec, index), normalizer_plan(spec).stats, spec.model.n_in)
    target = data.target
    points = batch.targets if target.spatial else None
    x, moved = augment(batch.images, points, train=not valid, generator=torch.Generator().manual_seed(spec.seed))
    drawn = None
    if moved is not None:
        height, width = x.shape[2], x.shape[3]
        scale = np.array([width / 2, height / 2])
        drawn = [[(p.numpy() + 1) * scale] for p in moved]
    return BatchView(augment.to_display(x), [target.label_text(t) for t in batch.targets], drawn)


def run_show_batch(spec: Spec, out: Path, n: int = 9, valid: bool = False, stage: int = 1, seed: int = 0) -> Path:
    """Write the grid of a batch_view to the PNG `out`."""
    console = Console()
    view = batch_view(spec, build_data(spec.data), console, n=n, valid=valid, stage=stage, seed=seed)
    path = image_grid(view.images, view.titles, out, view.points, ncols=grid_columns(len(view.images)))
    console.info(f"wrote {path}")
    return path
