"""`imgcls summary`: this tool's DataBlock.summary. Every stage of the pipeline on one item and one batch of a
training stage, with the stage, the file and what to do when one of them fails."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from rich.progress import track

from imgcls.data.audit import MAX_IMBALANCE
from imgcls.data.datablock import DataBundle
from imgcls.data.dataset import BadItem
from imgcls.data.images import read_image
from imgcls.data.item_tfms import build_item_transform
from imgcls.data.items import collect_items
from imgcls.data.labels import label_items
from imgcls.data.loaders import Collate
from imgcls.data.sources import resolve_root
from imgcls.data.splits import split_items
from imgcls.errors import DataError, ImgclsError, SpecError
from imgcls.report.console import Console
from imgcls.spec.schema import Spec
from imgcls.targets import TARGETS
from imgcls.train.builder import batch_augment, normalizer_plan, stage_bs, stage_size

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


def label_example(label: object) -> str:
    """A raw or encoded label as a person reads it, never a numpy repr: 'Abyssinian', ['cat', 'dog'], [0.5],
    (272, 130) for points."""
    if isinstance(label, str):
        return repr(label)
    if isinstance(label, np.ndarray) and label.ndim == 2 and label.shape[1] == 2:
        return ", ".join(f"({x:.4g}, {y:.4g})" for x, y in label.tolist())
    if isinstance(label, np.ndarray | list | tuple):
        parts = label.tolist() if isinstance(label, np.ndarray) else list(label)
        return "[" + ", ".join(repr(p) if isinstance(p, str) else label_example(p) for p in parts) + "]"
    if isinstance(label, int | float | np.number) and not isinstance(label, bool):
        return f"{float(label):.6g}"
    return repr(label)


def case_clashes(vocab: Sequence[str]) -> list[list[str]]:
    """Groups of vocab names that differ only in case ('Coat', 'coat'): separate classes, as the vocab compares
    labels exactly."""
    groups: dict[str, list[str]] = {}
    for name in vocab:
        groups.setdefault(name.casefold(), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def check_stage(spec: Spec, stage: int) -> int:
    """The 0-based index of the 1-based `stage` a user names (--stage), or a clear error."""
    n_stages = len(spec.train.stages)
    if not 1 <= stage <= n_stages:
        raise SpecError(f"--stage {stage}: the spec has {n_stages} stage(s), numbered 1 to {n_stages}")
    return stage - 1


def sample_positions(n_items: int, n: int, seed: int) -> list[int]:
    """`n` distinct positions out of n_items, drawn from a generator seeded by `seed` (not the first sorted
    items, which on a sorted folder are all of one class)."""
    order = np.random.default_rng([seed, 7]).permutation(n_items)
    return [int(p) for p in order[: min(n, n_items)]]


def _trace_item(console: Console, data: DataBundle, position: int) -> None:
    dataset = data.dataset(train=True, seed=0)
    index = int(dataset.indices[position])
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
    pixels, target, _ = _stage(console, "item transform", lambda: dataset.load(position, 0))
    console.info(f"  to array         {describe_tensor(pixels)} (HWC; the batch is NCHW)")
    coordinates = f": {label_example(np.asarray(target))} in [-1, 1]" if data.target.spatial else ""
    console.info(f"  target           {data.target.label_text(target)}{coordinates}")


def _trace_batch(console: Console, spec: Spec, data: DataBundle, bs: int, stage: int, seed: int) -> None:
    dataset = data.dataset(train=True, seed=0)
    samples = [dataset[(p, 0)] for p in sample_positions(len(dataset), bs, seed)]
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
    console.info(f"one training batch of {len(batch)} (stage {stage + 1}, random items, --seed {seed}):")
    console.info(f"  collate          {describe_tensor(batch.images)}; targets {describe_tensor(batch.targets)}")
    plan = normalizer_plan(spec)
    size = stage_size(spec, stage)
    augment = batch_augment(spec.augment, size, plan.stats, spec.model.n_in)
    generator = torch.Generator().manual_seed(spec.seed)
    points = batch.targets if data.target.spatial else None
    x, moved = augment(batch.images, points, train=True, generator=generator)
    grey = ", grey (n_in 1)" if spec.model.n_in == 1 else ""
    console.info(
        f"  batch augment    {describe_tensor(x)} (one fused resample to {tuple(x.shape[2:])}, lighting{grey})"
    )
    _policy_lines(console, spec)
    console.info(f"  normalize        {plan.description}")
    erasing = spec.augment.erasing
    if erasing is not None:
        console.info(
            f"  random erasing   p {erasing.p:g}, 1..{erasing.max_count} rectangle(s) per image, "
            f"{erasing.mode} fill, after normalization"
        )
    if moved is not None:
        console.info(f"  points moved     {describe_tensor(moved)}")
    console.info(f"  stage {stage + 1}          size {size or 'item size'}, batch size {stage_bs(spec, stage)}")


def _policy_lines(console: Console, spec: Spec) -> None:
    policy = spec.augment.policy
    if policy is not None:
        ops = f"{policy.n} ops at magnitude {policy.magnitude}/30" if policy.kind == "rand_augment" else "1 op"
        console.info(
            f"  policy           {policy.kind}: {ops} per image (geometric ops in the resample, colour ops after it)"
        )


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


def _build(console: Console, spec: Spec) -> DataBundle:
    """The DataBlock, one named stage at a time, printing what each gave."""
    root = _stage(console, "data.path", lambda: resolve_root(spec.data))
    console.info(f"data.path         {spec.data.path} -> {root}")
    items = _stage(console, "collect items", lambda: collect_items(root, spec.data.items))
    console.info(f"items             {len(items)} ({spec.data.items.kind})")
    labels = _stage(console, "label items", lambda: label_items(items, spec.data.labels))
    console.info(f"labels            {spec.data.labels.kind}, e.g. {label_example(labels[0])} for {items.relative(0)}")
    split = _stage(console, "split", lambda: split_items(items, spec.data.split))
    console.info(f"split             {spec.data.split.kind}: {len(split.train)} train / {len(split.valid)} valid")
    block = TARGETS.get(spec.data.target)
    targets = _stage(console, "encode targets", lambda: block.encode(labels, split.train, split.valid))
    return DataBundle(spec.data, items, split, targets, build_item_transform(spec.data.item_tfm))


def summarize(spec: Spec, console: Console, bs: int = 4, check: bool = False, stage: int = 1, seed: int = 0) -> int:
    """Print the trace for the 1-based `stage`; returns the number of problems found (0 = every stage worked)."""
    index = check_stage(spec, stage)
    try:
        data = _build(console, spec)
        _print_targets(console, data)
        positions = sample_positions(len(data.split.train), 1, seed)
        _trace_item(console, data, positions[0])
        _trace_batch(console, spec, data, bs, index, seed)
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


def _print_targets(console: Console, data: DataBundle) -> None:
    target = data.target
    if target.vocab:
        console.info(f"vocab             {len(target.vocab)}: {', '.join(target.vocab)}")
        train, valid = data.class_counts(True), data.class_counts(False)
        counts = ", ".join(f"{name} {train[name]}/{valid[name]}" for name in target.vocab)
        console.info(f"counts (train/valid) {counts}")
        for names in case_clashes(target.vocab):
            listed = ", ".join(f"'{n}'" for n in names)
            console.warn(
                f"{listed} differ only in case: the vocab compares labels exactly, so they are "
                f"{len(names)} classes; add data.labels.transforms: [lower] to make them one"
            )
        warning = imbalance_warning(data, train)
        if warning is not None:
            console.warn(warning)
        if data.spec.sampler == "balanced":
            console.info(f"sampler           balanced: each training class drawn with probability 1/{target.n_out}")
    else:
        console.info(f"targets           {target.describe()}")


def imbalance_warning(data: DataBundle, train: dict[str, int]) -> str | None:
    """A warning when the largest training class (or label) of the `train` counts has more than MAX_IMBALANCE x
    the items of the smallest, with both counts and the spec keys that correct for it; None otherwise."""
    if len(train) < 2:
        return None
    largest, smallest = max(train, key=lambda n: train[n]), min(train, key=lambda n: train[n])
    ratio = train[largest] / max(train[smallest], 1)
    if ratio <= MAX_IMBALANCE:
        return None
    target = data.target
    remedies = [f"train.loss.{target.weight_option}: auto"] if target.weight_option else []
    if target.can_balance:
        remedies.append("data.sampler: balanced")
    remedy = f"; consider {' or '.join(remedies)}" if remedies else ""
    return (
        f"class imbalance: the largest training class '{largest}' has {train[largest]} items, {ratio:.1f}x the "
        f"{train[smallest]} of the smallest, '{smallest}' (more than {MAX_IMBALANCE:g}x){remedy}"
    )
