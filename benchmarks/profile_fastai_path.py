"""fastai's side of profile_data_path.py: per-image cost of fastai 2.8.12's item path and of each batch
transform of aug_transforms(size, min_scale=0.75), on the same generated JPEGs, in one process.

    .venv-bench/bin/python benchmarks/profile_fastai_path.py [--size 224] [--repeats 5]

Run it with the fastai venv (see BENCHMARKS.md); it does not import imgcls.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_common import DataParams, cpu_model, default_data_dir, ensure_data, table


def build_train_dl(root: Path, item_size: int, size: int, bs: int) -> Any:
    """dls.train for the recipe, in this process (num_workers=0)."""
    import torch
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        FuncSplitter,
        ImageBlock,
        Resize,
        aug_transforms,
        get_image_files,
        parent_label,
    )

    valid = set((root / "valid.txt").read_text().split())
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        get_y=parent_label,
        splitter=FuncSplitter(lambda p: f"{Path(p).parent.name}/{Path(p).name}" in valid),
        item_tfms=Resize(item_size),
        batch_tfms=aug_transforms(size=size, min_scale=0.75),
    )
    return block.dataloaders(root, bs=bs, num_workers=0, device=torch.device("cpu")).train


def stages(dl: Any, bs: int) -> list[tuple[str, Callable[[], int]]]:
    """The item path over one batch of items, then after_batch and each of its transforms on that batch."""
    # Train-only transforms (lighting) run only when called with the training split index.
    dl.after_batch.split_idx = 0
    samples = [dl.do_item(i) for i in range(bs)]
    raw = dl.create_batch(dl.before_batch(samples))
    result = [
        ("item path: PILImage.create + Resize + ToTensor", lambda: len([dl.do_item(i) for i in range(bs)])),
        ("collate (create_batch)", lambda: (dl.create_batch(dl.before_batch(samples)), bs)[1]),
        ("after_batch, train (all transforms)", lambda: (dl.after_batch(raw), bs)[1]),
    ]
    batch = raw
    for tfm in dl.after_batch.fs:
        result.append((f"  {type(tfm).__name__}", lambda tfm=tfm, batch=batch: (tfm(batch, split_idx=0), bs)[1]))
        batch = tfm(batch, split_idx=0)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--item-size", type=int, default=460)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import torch

    params = DataParams(classes=args.classes, per_class=args.n)
    root = ensure_data(args.data or default_data_dir(params), params)
    dl = build_train_dl(root, args.item_size, args.size, args.bs)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {cpu_model()}; torch threads {torch.get_num_threads()}")
    print(f"fastai train dl over {root}; Resize({args.item_size}), aug_transforms(size={args.size}, min_scale=0.75)\n")
    timed: dict[str, list[float]] = {}
    for _ in range(args.repeats):  # round-robin, as in profile_data_path.py
        for name, run in stages(dl, args.bs):
            start = time.perf_counter()
            n = run()
            timed.setdefault(name, []).append((time.perf_counter() - start) * 1000 / n)
    rows = [[name, f"{statistics.median(values):.2f}"] for name, values in timed.items()]
    print(table(rows, ["stage (fastai, CPU, one process)", "ms per image"]))


if __name__ == "__main__":
    main()
