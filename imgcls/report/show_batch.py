"""`imgcls show-batch`: augmented (or validation) images as the model sees them, with their labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from imgcls.augment.pipeline import BatchAugment
from imgcls.data.blocks import TargetInfo
from imgcls.data.datablock import DataBundle
from imgcls.data.dataset import BadItem
from imgcls.data.loaders import Collate
from imgcls.errors import DataError
from imgcls.report.console import Console
from imgcls.report.plots import image_grid
from imgcls.report.summary import describe_normalizer
from imgcls.spec.schema import Spec


def label_text(info: TargetInfo, target: torch.Tensor) -> str:
    if info.kind == "category":
        return info.vocab[int(target)]
    if info.kind == "multi_category":
        return " ".join(info.vocab[i] for i in torch.nonzero(target > 0.5).flatten().tolist()) or "(none)"
    if info.kind == "point":
        return f"{info.n_points} point(s)"
    return ", ".join(f"{v:.3g}" for v in target.flatten().tolist())


def to_display(images: torch.Tensor, augment: BatchAugment) -> list[np.ndarray]:
    """Normalized float NCHW -> HWC uint8 for plotting."""
    if augment.normalizer is not None:
        images = augment.normalizer.denormalize(images)
    pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return list(pixels)


def show_batch(spec: Spec, data: DataBundle, out: Path, console: Console, n: int = 9, valid: bool = False) -> Path:
    dataset = data.dataset(train=not valid, seed=spec.seed)
    order = np.arange(len(dataset)) if valid else np.random.default_rng([spec.seed, 1, 0]).permutation(len(dataset))
    samples = [dataset[(int(p), 0)] for p in order[: min(n, len(dataset))]]
    for item in (s for s in samples if isinstance(s, BadItem)):
        console.warn(f"cannot read {item.path}: {item.reason} (not shown)")
    batch = Collate(dataset.paths)(samples)
    if batch.error is not None:
        raise DataError(batch.error)
    if len(batch) == 0:
        raise DataError("none of the images in this batch could be read")
    normalizer, _ = describe_normalizer(spec)
    augment = BatchAugment(spec.augment, spec.final_size, normalizer)
    points = batch.targets if batch.targets.ndim == 3 else None
    x, moved = augment(batch.images, points, train=not valid, generator=torch.Generator().manual_seed(spec.seed))
    images = to_display(x, augment)
    titles = [label_text(data.info, t) for t in batch.targets]
    drawn = None
    if moved is not None:
        height, width = x.shape[2], x.shape[3]
        scale = np.array([width / 2, height / 2])
        drawn = [[(p.numpy() + 1) * scale] for p in moved]
    return image_grid(images, titles, out, drawn, ncols=int(np.ceil(np.sqrt(len(images)))))
