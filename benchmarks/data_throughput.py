"""Issue 2: images/s of imgcls's data path against plain PIL decoding of the same files, in one run.

    PYTHONPATH=. /work/main/.venv/bin/python benchmarks/data_throughput.py [--n 400] [--rounds 3]

Variants, run in alternating order each round (A B C D E, then E D C B A, ...) so that machine noise (other
processes on a shared 2-core box) falls on all of them alike:

- pil-1proc:      Image.open(p).convert('RGB').load() in this process (the decode floor, one core)
- pil-workers:    the same decode in W DataLoader workers, only the image size sent back (decode, W cores)
- presize-ref:    decode + centre square crop + PIL bilinear resize to 460 + np.stack in W workers: a minimal
                  hand-written presize, to tell imgcls's own overhead from the work itself
- imgcls-uint8:   imgcls's DataLoader (item transform resize 460 crop) -> uint8 batches in this process
- imgcls-device:  imgcls's DeviceLoader: the above, moved to the device, fused augmentation to 224 (no model)
- imgcls-device-cache: the same with data.mode cache (the warm-up epoch fills the presize cache; timed epochs
                  read it and cut a fresh random window per image)
- what-if-no-antialias (only with --what-if): imgcls-device with BatchAugment._antialias patched out in this
                  process, to size that fix; not imgcls's behaviour

Every variant reads the training split (the files imgcls trains on); images/s counts images delivered.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import (
    DataParams,
    cpu_model,
    default_data_dir,
    ensure_data,
    imgcls_spec,
    imgcls_train_loader,
    pick_device,
    ratio,
    summarize,
    sync,
    table,
    timed,
)

Variant = Callable[[int], int]  # epoch -> images delivered


class DecodeOnly:
    """Dataset: decode one file with plain PIL, return only its size (so nothing big crosses processes)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, int]:
        from PIL import Image

        with Image.open(self.paths[index]) as opened:
            image = opened.convert("RGB")
            image.load()
            return image.size


class PresizeRef(DecodeOnly):
    """Dataset: decode, centre square crop, one bilinear resize to `size` -> HWC uint8 (a minimal presize)."""

    def __init__(self, paths: list[str], size: int) -> None:
        super().__init__(paths)
        self.size = size

    def __getitem__(self, index: int) -> Any:
        from PIL import Image

        with Image.open(self.paths[index]) as opened:
            image = opened.convert("RGB")
            width, height = image.size
            side = min(width, height)
            box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
            resized = image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
            return np.asarray(resized)


def count_collate(items: list[Any]) -> int:
    return len(items)


def stack_collate(items: list[np.ndarray]) -> Any:
    """np.stack -> NCHW view of an NHWC uint8 tensor, as imgcls's Collate does."""
    import torch

    return torch.from_numpy(np.stack(items)).permute(0, 3, 1, 2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from imgcls.data.loaders import default_workers

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="image folder (generated if missing)")
    parser.add_argument("--n", type=int, default=400, help="images per class (default 400)")
    parser.add_argument("--classes", type=int, default=2, help="classes (default 2)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="DataLoader workers (imgcls's)")
    parser.add_argument("--bs", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per variant (default 3)")
    parser.add_argument("--item-size", type=int, default=460, help="item transform size, px (default 460)")
    parser.add_argument("--size", type=int, default=224, help="augmented size, px (default 224)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these variants")
    parser.add_argument("--what-if", action="store_true", help="add imgcls-device with _antialias patched out")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in this process (default torch's)")
    return parser.parse_args(argv)


def imgcls_loaders(root: Path, args: argparse.Namespace, device: Any, mode: str = "stream") -> tuple[Any, list[str]]:
    """imgcls's DeviceLoader of the training split (data.mode `mode`), and the split's files."""
    spec = imgcls_spec(root, args.item_size, args.size, args.bs, args.workers)
    cache_dir = str(root.parent / f"{root.name}-presize-cache")
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"mode": mode, "cache_dir": cache_dir})})
    loader, data = imgcls_train_loader(spec, device, channels_last=device.type == "cuda")
    return loader, [str(data.items.paths[int(i)]) for i in data.split.train]


def torch_loader(dataset: Any, args: argparse.Namespace, collate: Callable[..., Any]) -> Any:
    """A plain torch DataLoader with imgcls's worker settings (persistent, prefetch 4), for the references."""
    from torch.utils.data import DataLoader

    extra: dict[str, Any] = {"persistent_workers": True, "prefetch_factor": 4} if args.workers > 0 else {}
    return DataLoader(
        dataset, batch_size=args.bs, shuffle=True, drop_last=True, num_workers=args.workers, collate_fn=collate, **extra
    )


def build_variants(root: Path, args: argparse.Namespace) -> dict[str, Variant]:
    device = pick_device(args.device)
    device_loader, paths = imgcls_loaders(root, args, device)
    # data.mode cache: the warm-up epoch fills the presize cache, the timed epochs read it.
    cache_loader, _ = imgcls_loaders(root, args, device, mode="cache")

    def pil_1proc(_: int) -> int:
        return len([DecodeOnly(paths)[i] for i in range(len(paths))])

    def over(loader: Any, count: Callable[[Any], int]) -> Variant:
        def run(_: int) -> int:
            return sum(count(batch) for batch in loader)

        return run

    def imgcls_uint8(epoch: int) -> int:
        device_loader.set_epoch(epoch)
        return sum(len(batch) for batch in device_loader.loader)

    def delivered(loader: Any) -> Variant:
        def run(epoch: int) -> int:
            loader.set_epoch(epoch)
            n = 0
            for batch in loader:
                n += batch.images.shape[0]
            sync(device)
            return n

        return run

    imgcls_device = delivered(device_loader)

    def without_antialias(epoch: int) -> int:
        """What-if (not imgcls's behaviour): BatchAugment._antialias patched out for this epoch only."""
        from imgcls.augment.pipeline import BatchAugment

        original = BatchAugment.__dict__["_antialias"]
        BatchAugment._antialias = staticmethod(lambda x, out_size: x)  # type: ignore[method-assign]
        try:
            return imgcls_device(epoch)
        finally:
            BatchAugment._antialias = original  # type: ignore[method-assign]

    decode = torch_loader(DecodeOnly(paths), args, count_collate)
    presize = torch_loader(PresizeRef(paths, args.item_size), args, stack_collate)
    return {
        "pil-1proc": pil_1proc,
        "pil-workers": over(decode, int),
        "presize-ref": over(presize, lambda b: int(b.shape[0])),
        "imgcls-uint8": imgcls_uint8,
        "imgcls-device": imgcls_device,
        "imgcls-device-cache": delivered(cache_loader),
        **({"what-if-no-antialias": without_antialias} if args.what_if else {}),
    }


def measure(variants: dict[str, Variant], rounds: int) -> dict[str, list[float]]:
    """One untimed warm-up epoch each (starts persistent workers), then `rounds` alternating timed epochs."""
    names = list(variants)
    for name in names:
        n, seconds = timed(lambda name=name: variants[name](0))
        print(f"warm-up {name:20s} {n:5d} images in {seconds:6.2f} s (incl. worker start)", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for number in range(rounds):
        order = names if number % 2 == 0 else names[::-1]
        for name in order:
            n, seconds = timed(lambda name=name, epoch=number + 1: variants[name](epoch))
            rates[name].append(n / seconds)
            print(f"round {number + 1} {name:20s} {n / seconds:8.1f} images/s  (load {os.getloadavg()[0]:.1f})")
    return rates


def report(rates: dict[str, list[float]], args: argparse.Namespace) -> None:
    rows = [[name, summarize(values), " ".join(f"{v:.1f}" for v in values)] for name, values in rates.items()]
    print()
    print(table(rows, ["variant", "images/s median (min-max)", "per round"]))
    pairs = [
        ("imgcls-device", "pil-workers", f"delivered at {args.size} px vs decode only, both {args.workers} workers"),
        ("imgcls-device", "pil-1proc", "delivered vs decode in one process"),
        ("imgcls-uint8", "pil-workers", "imgcls CPU part (decode+resize 460) vs decode only"),
        ("imgcls-uint8", "presize-ref", "imgcls CPU part vs minimal PIL presize, same work"),
        ("imgcls-device", "imgcls-uint8", "cost of the batch augmentation on the device"),
        ("imgcls-device-cache", "imgcls-device", "presize cache vs decoding every epoch"),
        ("what-if-no-antialias", "imgcls-device", "what-if: BatchAugment without the area pre-resize"),
    ]
    ratio_rows = [
        [f"{a} / {b}", f"{ratio(rates[a], rates[b]):.3f}", why] for a, b, why in pairs if a in rates and b in rates
    ]
    print()
    print(table(ratio_rows, ["ratio (ours / baseline)", "value", "meaning"]))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    params = DataParams(classes=args.classes, per_class=args.n)
    root = ensure_data(args.data or default_data_dir(params), params)
    python = sys.version.split()[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {cpu_model()}, torch {torch.__version__}, python {python}")
    print(
        f"data {root}: {args.classes} x {args.n} JPEGs; workers {args.workers}, bs {args.bs}, item resize "
        f"{args.item_size} crop, augment {args.size} min_scale 0.75; main-process torch threads "
        f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}"
    )
    variants = build_variants(root, args)
    if args.only:
        variants = {name: run for name, run in variants.items() if name in args.only}
    rates = measure(variants, args.rounds)
    report(rates, args)
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
