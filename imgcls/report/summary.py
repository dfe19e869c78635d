"""`imgcls summary`: this tool's DataBlock.summary. Every stage of the pipeline on one item and one batch,
with the stage, the file and what to do when one of them fails."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from rich.progress import track

from imgcls.augment.pipeline import BatchAugment, Normalizer
from imgcls.data.datablock import DataBundle
from imgcls.data.dataset import BadItem
from imgcls.data.images import read_image
from imgcls.data.items import collect_items
from imgcls.data.labels import label_items
from imgcls.data.loaders import Collate
from imgcls.data.sources import resolve_root
from imgcls.errors import DataError, ImgclsError
from imgcls.report.console import Console
from imgcls.spec.schema import Spec
from imgcls.train.setup import pretrained_stats

T = TypeVar("T")


@dataclass
class StageFailure(Exception):  # noqa: N818 - carries a failure, named for it
    stage: str
    error: ImgclsError


def _stage(console: Console, name: str, step: Callable[[], T]) -> T:
    try:
        return step()
    except ImgclsError as err:
        console.info(f"  x {name}: FAILED")
        raise StageFailure(name, err) from None


def describe_tensor(value: torch.Tensor | np.ndarray) -> str:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
    kind = "tensor" if isinstance(value, torch.Tensor) else "array"
    span = f", values {array.min():.4g}..{array.max():.4g}" if array.size else ""
    return f"{array.dtype} {kind} {tuple(array.shape)}{span}"


def describe_normalizer(spec: Spec) -> tuple[Normalizer | None, str]:
    """The normalization the spec asks for, without measuring, and how to describe it."""
    choice = spec.data.normalize
    if choice == "imagenet" or (choice == "auto" and (spec.model.pretrained or spec.model.weights)):
        stats = pretrained_stats(spec)
        return stats, f"mean {stats.mean}, std {stats.std}"
    if choice in ("none", "auto"):
        return None, "none"
    if choice == "measure":
        return None, "measured on training batches when training starts (shown unnormalized here)"
    assert not isinstance(choice, str)
    return Normalizer(tuple(choice.mean), tuple(choice.std)), f"mean {choice.mean}, std {choice.std}"


def _label_text(data: DataBundle, target: np.ndarray | torch.Tensor) -> str:
    value = target.numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
    info = data.info
    if info.kind == "category":
        return f"'{info.vocab[int(value)]}' -> class {int(value)}"
    if info.kind == "multi_category":
        names = [info.vocab[i] for i in np.flatnonzero(value)]
        return f"{names} -> one-hot of {len(info.vocab)}"
    return f"{np.round(value, 3).tolist()}"


def _trace_item(console: Console, data: DataBundle) -> None:
    dataset = data.dataset(train=True, seed=0)
    index = int(dataset.indices[0])
    path = Path(dataset.paths[index])
    console.info(f"one training item: {path}")
    image, size = _stage(console, "read file", lambda: read_image(path))
    console.info(f"  read file        PIL {image.mode} image {size[0]}x{size[1]} px (width x height, after EXIF)")
    window = dataset.window(index, 0, size)
    if window is None:
        console.info("  item transform   none: the image keeps its own size")
    else:
        box = ", ".join(f"{v:.1f}" for v in window.box)
        console.info(
            f"  item transform   {type(data.item_tfm).__name__} window ({box}) -> {window.out[0]}x{window.out[1]} px"
        )
    pixels, target, _ = _stage(console, "item transform", lambda: dataset.load(0, 0))
    console.info(f"  to array         {describe_tensor(pixels)} (HWC; the batch is NCHW)")
    console.info(f"  target           {_label_text(data, target)}")


def _trace_batch(console: Console, spec: Spec, data: DataBundle, bs: int) -> None:
    dataset = data.dataset(train=True, seed=0)
    samples = [dataset[(i, 0)] for i in range(min(bs, len(dataset)))]
    bad = [s for s in samples if isinstance(s, BadItem)]
    for item in bad:
        console.warn(
            f"cannot read {item.path}: {item.reason} "
            "(left out here; training stops on it unless data.on_bad_image: skip)"
        )
    batch = Collate(dataset.paths)(samples)
    if batch.error is not None:
        console.info("  x collate: FAILED")
        raise StageFailure("collate", DataError(batch.error))
    console.info(f"one training batch of {len(batch)}:")
    console.info(f"  collate          {describe_tensor(batch.images)}; targets {describe_tensor(batch.targets)}")
    normalizer, how = describe_normalizer(spec)
    augment = BatchAugment(spec.augment, spec.final_size, normalizer, spec.model.n_in)
    generator = torch.Generator().manual_seed(spec.seed)
    points = batch.targets if batch.targets.ndim == 3 else None
    x, moved = augment(batch.images, points, train=True, generator=generator)
    console.info(f"  batch augment    {describe_tensor(x)} (one fused resample to {tuple(x.shape[2:])}, lighting)")
    policy, erasing = spec.augment.policy, spec.augment.erasing
    if policy is not None:
        ops = f"{policy.n} ops at magnitude {policy.magnitude}/30" if policy.kind == "rand_augment" else "1 op"
        console.info(
            f"  policy           {policy.kind}: {ops} per image (geometric ops in the resample, colour ops after it)"
        )
    console.info(f"  normalize        {how}")
    if erasing is not None:
        console.info(
            f"  random erasing   p {erasing.p:g}, 1..{erasing.max_count} rectangle(s) per image, "
            f"{erasing.mode} fill, after normalization"
        )
    if moved is not None:
        console.info(f"  points moved     {describe_tensor(moved)}")


def check_all(console: Console, data: DataBundle) -> list[BadItem]:
    """Decode every item through its item transform; the files that fail, by name."""
    bad: list[BadItem] = []
    for train in (True, False):
        dataset = data.dataset(train=train, seed=0)
        for position in track(range(len(dataset)), description="checking", console=console.rich, transient=True):
            sample = dataset[(position, 0)]
            if isinstance(sample, BadItem):
                bad.append(sample)
    return bad


def summarize(spec: Spec, console: Console, bs: int = 4, check: bool = False) -> int:
    """Print the trace; returns the number of problems found (0 = every stage worked)."""
    from imgcls.data.blocks import encode_targets
    from imgcls.data.item_tfms import build_item_transform
    from imgcls.data.splits import split_items

    try:
        root = _stage(console, "data.path", lambda: resolve_root(spec.data))
        console.info(f"data.path         {spec.data.path} -> {root}")
        items = _stage(console, "collect items", lambda: collect_items(root, spec.data.items))
        console.info(f"items             {len(items)} ({spec.data.items.kind})")
        labels = _stage(console, "label items", lambda: label_items(items, spec.data.labels))
        console.info(f"labels            {spec.data.labels.kind}, e.g. {labels[0]!r} for {items.relative(0)}")
        split = _stage(console, "split", lambda: split_items(items, spec.data.split))
        console.info(f"split             {spec.data.split.kind}: {len(split.train)} train / {len(split.valid)} valid")
        targets = _stage(console, "encode targets", lambda: encode_targets(spec.data.target, labels, split))
        data = DataBundle(spec.data, items, split, targets, build_item_transform(spec.data.item_tfm))
        _print_vocab(console, data)
        _trace_item(console, data)
        _trace_batch(console, spec, data, bs)
    except StageFailure as failure:
        console.info(f"the '{failure.stage}' stage failed: {failure.error}")
        return 1
    if not check:
        return 0
    bad = check_all(console, data)
    for item in bad:
        console.info(f"unreadable: {item.path}: {item.reason}")
    console.info(f"checked {len(data.split.train) + len(data.split.valid)} items: {len(bad)} unreadable")
    return len(bad)


def _print_vocab(console: Console, data: DataBundle) -> None:
    info = data.info
    if info.kind in ("category", "multi_category"):
        console.info(f"vocab             {len(info.vocab)}: {', '.join(info.vocab)}")
        train, valid = data.class_counts(True), data.class_counts(False)
        counts = ", ".join(f"{name} {train[name]}/{valid[name]}" for name in info.vocab)
        console.info(f"counts (train/valid) {counts}")
    elif info.kind == "point":
        console.info(f"targets           {info.n_points} point(s) per image, scaled to [-1, 1]")
    else:
        console.info(f"targets           {info.n_out} float(s) per image")
