"""What augmentation policies and random erasing add to the batch transform: seconds per training epoch on the
CPU, with and without each, on generated uint8 batches.

    PYTHONPATH=. python benchmarks/augment_cost.py                       # 64 x 3 x 224 x 224 -> 160, 5 rounds
    PYTHONPATH=. python benchmarks/augment_cost.py --bs 8 --item 48 --size 32 --batches 2 --rounds 2   # toy

Each round times every variant on the same `--batches` batches, the variants in turn (their order rotated each
round), so that a change in machine load falls on all of them alike; each batch is seeded as in training. An
epoch is `--items` images (default 9469, Imagenette's training set), so seconds per epoch = seconds per image
x items. Only the batch transform is timed: no decoding, no model.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench_common import cpu_model, table

VARIANTS: dict[str, dict[str, Any]] = {
    "fastai aug_transforms (baseline)": {},
    "+ trivial_augment": {"policy": {"kind": "trivial_augment"}},
    "+ rand_augment n2 m9": {"policy": {"kind": "rand_augment", "n": 2, "magnitude": 9}},
    "+ erasing p0.25 pixel": {"erasing": {"p": 0.25, "mode": "pixel"}},
    "+ rand_augment + erasing": {
        "policy": {"kind": "rand_augment", "n": 2, "magnitude": 9},
        "erasing": {"p": 0.25, "mode": "pixel"},
    },
}


def build(extra: dict[str, Any], size: int) -> Any:
    from imgcls.augment.pipeline import IMAGENET, BatchAugment
    from imgcls.spec.data import AugmentSpec

    spec = AugmentSpec.model_validate({"size": size, "min_scale": 0.75, **extra})
    return BatchAugment(spec, (size, size), IMAGENET)


def time_round(augment: Any, batches: list[Any], seeds: list[int]) -> float:
    """Seconds for the transform over `batches`, each with its own seeded generator (as the loader does)."""
    import torch

    generator = torch.Generator()
    start = time.perf_counter()
    for images, seed in zip(batches, seeds, strict=True):
        generator.manual_seed(seed)
        augment(images, train=True, generator=generator)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--item", type=int, default=224, help="side of the uint8 items (the item transform's size)")
    parser.add_argument("--size", type=int, default=160, help="final size after the batch transform")
    parser.add_argument("--batches", type=int, default=8, help="batches per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--items", type=int, default=9469, help="images per epoch")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    # NHWC memory, as Collate stacks HWC arrays, viewed as NCHW.
    batches = [
        torch.randint(0, 256, (args.bs, args.item, args.item, 3), dtype=torch.uint8, generator=generator).permute(
            0, 3, 1, 2
        )
        for _ in range(args.batches)
    ]
    seeds = list(range(args.batches))
    augments = {name: build(extra, args.size) for name, extra in VARIANTS.items()}
    for augment in augments.values():  # warm-up: first-call allocations and kernel selection
        time_round(augment, batches[:1], seeds[:1])
    names = list(augments)
    epochs: dict[str, list[float]] = {name: [] for name in names}
    per_epoch = args.items / (args.bs * args.batches)
    for round_number in range(args.rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            epochs[name].append(time_round(augments[name], batches, seeds) * per_epoch)
    base = statistics.mean(epochs[names[0]])
    rows = []
    for name in names:
        values = epochs[name]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(
            [
                name,
                f"{statistics.mean(values):.2f}",
                f"{spread:.2f}",
                f"{min(values):.2f}-{max(values):.2f}",
                f"{statistics.mean(values) / base:.2f}x",
            ]
        )
    print(
        f"batch transform only, {args.bs} x 3 x {args.item} x {args.item} uint8 -> {args.size} px, "
        f"{args.items} images per epoch, {args.rounds} rounds of {args.batches} batches per variant, "
        f"{torch.get_num_threads()} torch threads; {cpu_model()}"
    )
    print(table(rows, ["variant", "s/epoch mean", "std", "min-max", "vs baseline"]))


if __name__ == "__main__":
    main()
