"""Where imgcls's data path spends its time, per image: decode, resize, to-array, collate, and each step of
the batch augmentation; plus a few what-ifs (clearly labelled: not what imgcls does) that size the fixes.

    PYTHONPATH=. /work/main/.venv/bin/python benchmarks/profile_data_path.py [--n 400] [--repeats 3]

Everything runs in this one process (no workers), each stage timed `--repeats` times, median reported, so the
numbers are per-core costs; the DataLoader spreads the CPU stages over its workers, the augmentation runs in
the main process (on the device).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import DataParams, cpu_model, default_data_dir, ensure_data, imgcls_spec, table


def per_item(stages: list[tuple[str, Callable[[], int]]], repeats: int) -> list[list[str]]:
    """[name, median ms per item] for each stage (`run` returns how many items it handled). The stages run
    round-robin, `repeats` times, so that a change in machine load falls on all of them alike."""
    values: dict[str, list[float]] = {name: [] for name, _ in stages}
    for _ in range(repeats):
        for name, run in stages:
            start = time.perf_counter()
            n = run()
            values[name].append((time.perf_counter() - start) * 1000 / n)
    return [[name, f"{statistics.median(v):.2f}"] for name, v in values.items()]


def cpu_stages(dataset: Any, bs: int, repeats: int) -> list[list[str]]:
    """The item path of ImageDataset.load split into its calls, over every training item."""
    from PIL import Image

    from imgcls.data.images import read_image
    from imgcls.data.item_tfms import apply_window
    from imgcls.data.loaders import Collate

    keys = list(range(len(dataset)))
    paths = [Path(dataset.paths[int(dataset.indices[k])]) for k in keys]
    windows = {}

    def draft_for(key: int) -> Callable[[tuple[int, int]], Any]:
        def plan(size: tuple[int, int]) -> Any:
            windows[key] = (dataset.window(int(dataset.indices[key]), 0, size), size)
            return windows[key][0].draft_size(size)

        return plan

    decoded = {k: read_image(paths[k], draft_for(k))[0] for k in keys}
    resized = [Image.fromarray(apply_window(decoded[k], *windows[k])) for k in keys]
    samples = [dataset[(k, 0)] for k in keys]
    collate = Collate(dataset.paths)

    def plain_decode() -> int:
        for path in paths:
            with Image.open(path) as image:
                image.convert("RGB").load()
        return len(paths)

    stages = [
        ("plain PIL decode (the baseline)", plain_decode),
        ("imgcls read_image (open, plan, decode)", lambda: len([read_image(paths[k], draft_for(k)) for k in keys])),
        ("apply_window (PIL resize + np.asarray)", lambda: len([apply_window(decoded[k], *windows[k]) for k in keys])),
        ("  of which np.asarray of the 460 px result", lambda: len([np.asarray(r) for r in resized])),
        ("dataset[(i, epoch)] (all of the above)", lambda: len([dataset[(k, 0)] for k in keys])),
        ("Collate (np.stack into a uint8 batch)", lambda: sum(len(collate(samples[i : i + bs])) for i in keys[::bs])),
    ]
    return per_item(stages, repeats)


def augment_stages(bs: int, item_size: int, size: int, repeats: int) -> list[list[str]]:
    """BatchAugment on one uint8 batch (NHWC memory, as Collate makes it), split into its steps."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from imgcls.augment.geometry import affine_matrices, sampling_grid, warp_coefficients
    from imgcls.augment.pipeline import BatchAugment
    from imgcls.spec.data import AugmentSpec

    augment = BatchAugment(AugmentSpec(size=(size, size), min_scale=0.75), size=(size, size))
    images = torch.randint(0, 256, (bs, item_size, item_size, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    generator = torch.Generator().manual_seed(0)
    x = images.float().div_(255.0)
    params = augment.draw(bs, x.device, generator)
    matrices = affine_matrices(params, (item_size, item_size), False, square_crop=True)
    warp = warp_coefficients(params.warp_x, params.warp_y)
    grid = sampling_grid(matrices, (size, size), warp)
    smaller = augment._antialias(x, (size, size))
    sampled = F.grid_sample(smaller, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def draw_matrices() -> Any:
        return affine_matrices(params, (item_size, item_size), False, square_crop=True), warp_coefficients(
            params.warp_x, params.warp_y
        )

    def batch(run: Callable[[], Any]) -> Callable[[], int]:
        return lambda: (run(), bs)[1]

    stages: list[tuple[str, Callable[[], Any]]] = [
        ("BatchAugment, train (all steps)", lambda: augment(images, train=True, generator=generator)),
        ("BatchAugment, valid (all steps)", lambda: augment(images, train=False)),
        ("  uint8 -> float / 255", lambda: images.float().div_(255.0)),
        ("  draw + matrices + homography", lambda: (augment.draw(bs, x.device, generator), draw_matrices())),
        ("  sampling_grid (affine_grid + homography)", lambda: sampling_grid(matrices, (size, size), warp)),
        ("  _antialias (area resize)", lambda: augment._antialias(x, (size, size))),
        ("  grid_sample", lambda: F.grid_sample(smaller, grid, padding_mode="reflection", align_corners=False)),
        ("  lighting (logit, sigmoid)", lambda: augment.lighting(sampled, generator)),
        (
            "what-if: grid_sample straight from the 460 px batch",
            lambda: F.grid_sample(x, grid, padding_mode="reflection", align_corners=False),
        ),
        (
            "what-if: uint8 bilinear antialiased resize",
            lambda: F.interpolate(images, size=(size, size), mode="bilinear", antialias=True),
        ),
    ]
    return per_item([(name, batch(run)) for name, run in stages], repeats)


def torchvision_what_if(paths: list[str], item_size: int, repeats: int) -> list[list[str]]:
    """What-if: libjpeg-turbo decode (torchvision.io) + torch uint8 resize instead of Pillow, per image."""
    import torch
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as TF  # noqa: N812

    torch.set_num_threads(1)  # as in a DataLoader worker

    def decode() -> int:
        for path in paths:
            decode_jpeg(read_file(path))
        return len(paths)

    def decode_resize() -> int:
        for path in paths:
            image = decode_jpeg(read_file(path))
            side = min(image.shape[1:])
            TF.resize(TF.center_crop(image, [side, side]), [item_size, item_size], antialias=True)
        return len(paths)

    names = ("what-if: torchvision decode_jpeg", "what-if: decode_jpeg + centre crop + uint8 resize")
    return per_item(list(zip(names, (decode, decode_resize), strict=True)), repeats)


def hot_spots(dataset: Any, top: int) -> str:
    """cProfile of the item path over every training item: the functions with the most own time."""
    profile = cProfile.Profile()
    profile.enable()
    for key in range(len(dataset)):
        dataset[(key, 0)]
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(top)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip())[-3000:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="image folder (generated if missing)")
    parser.add_argument("--n", type=int, default=400, help="images per class (default 400)")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--item-size", type=int, default=460)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import torch

    from imgcls.data.datablock import build_data

    params = DataParams(classes=args.classes, per_class=args.n)
    root = ensure_data(args.data or default_data_dir(params), params)
    data = build_data(imgcls_spec(root, args.item_size, args.size, args.bs, 0).data, quiet=True)
    dataset = data.dataset(True, 42)
    threads = torch.get_num_threads()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {cpu_model()}; torch threads {threads} (1 for the torchvision what-ifs)")
    print(f"{len(dataset)} training JPEGs from {root}; item resize {args.item_size} crop, augment {args.size}\n")
    rows = cpu_stages(dataset, args.bs, args.repeats)
    rows += augment_stages(args.bs, args.item_size, args.size, args.repeats)
    rows += torchvision_what_if([dataset.paths[int(i)] for i in dataset.indices], args.item_size, args.repeats)
    print(table(rows, ["stage (CPU, one process)", "ms per image"]))
    print("\ncProfile of dataset[(i, 0)] over the training items, by own time:\n")
    print(hot_spots(dataset, 12))


if __name__ == "__main__":
    main()
