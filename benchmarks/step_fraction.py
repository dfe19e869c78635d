"""Issue 18, step 3: how much of the training step's own speed imgcls's data path sustains.

    PYTHONPATH=. python3 benchmarks/step_fraction.py [--json result.json]      # on a GPU
    PYTHONPATH=. python3 benchmarks/step_fraction.py --smoke                     # the same code, toy sizes, CPU

resnet50 @224 in bf16, channels_last, one training step (imgcls's train_batch: forward, loss, backward, Adam)
per batch of 64. Fed by the real data path: generated photo-like JPEGs of 300-600 px (bench_common), item
resize 460 crop, augmentation to 224 with min_scale 0.75, DataLoader workers = every core of the machine. The
fraction is the loader-fed step's images/s over the same step's images/s on one batch already on the device
(goal: 0.9 or more). Three ways of feeding it, each from the same model and optimizer:

- pil:    data.decode: pil, data.mode: stream   (PIL decodes and resizes in the workers, every epoch)
- cache:  data.decode: pil, data.mode: cache    (the warm-up epoch fills the presize cache; timed epochs read it)
- device: data.decode: device, data.mode: stream (workers read bytes; nvjpeg decodes, the device cuts windows)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import DataParams, default_data_dir, ensure_data, imgcls_spec, step_rounds, step_state, table

VARIANTS = {
    "pil": {"mode": "stream", "decode": "pil"},
    "cache": {"mode": "cache", "decode": "pil"},
    "device": {"mode": "stream", "decode": "device"},
}
GOAL = 0.9


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--smoke", action="store_true", help="toy sizes on the CPU: checks the code path, measures nothing")
    add("--data", type=Path, default=None, help="JPEG folder (generated if missing)")
    add("--work", type=Path, default=None, help="folder for the presize cache (default: a temp folder)")
    add("--classes", type=int, default=2, help="classes (default 2)")
    add("--n", type=int, default=1600, help="images per class (default 1600: 2560 train images, 40 steps)")
    add("--workers", type=int, default=cores(), help="DataLoader workers (default: every core)")
    add("--bs", type=int, default=64, help="batch size (default 64)")
    add("--rounds", type=int, default=2, help="timed rounds per variant (default 2)")
    add("--arch", default="resnet50", help="model (default resnet50)")
    add("--item-size", type=int, default=460, help="item resize, px (default 460)")
    add("--size", type=int, default=224, help="training size, px (default 224)")
    add("--precision", default="bf16", help="runtime.precision (default bf16)")
    add("--device", default="cuda", help="runtime.device (default cuda)")
    add("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS), help="which to measure")
    add("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.workers, args.bs, args.rounds = 10, 1, 4, 1
        args.arch, args.item_size, args.size, args.precision, args.device = "xresnet_tiny", 48, 32, "fp32", "cpu"
    return args


def variant_spec(args: argparse.Namespace, root: Path, cache: Path, name: str) -> Any:
    spec = imgcls_spec(
        root,
        args.item_size,
        args.size,
        args.bs,
        args.workers,
        model={"arch": args.arch, "pretrained": False},
        runtime={"device": args.device, "precision": args.precision, "channels_last": True},
    )
    data = spec.data.model_copy(update={**VARIANTS[name], "cache_dir": str(cache)})
    return spec.model_copy(update={"data": data})


def measure(args: argparse.Namespace, root: Path, cache: Path) -> dict[str, dict[str, Any]]:
    from imgcls.train.builder import Pipeline

    state, ctx = step_state(variant_spec(args, root, cache, args.variants[0]))
    results = {}
    for name in args.variants:
        spec = variant_spec(args, root, cache, name)
        loader = Pipeline(spec, state.runtime).stage_loaders(0).train
        print(f"{time.strftime('%H:%M:%S')} {name}: mode {spec.data.mode}, decode {spec.data.decode}", flush=True)
        results[name] = step_rounds(state, ctx, loader, args.rounds)
        print(f"  {json.dumps(results[name])}", flush=True)
        del loader  # ends its persistent workers before the next variant starts its own
        gc.collect()
    return results


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    rows = [
        [
            name,
            f"{max(r['loader_rates']):.0f}",
            f"{max(r['cached_rates']):.0f}",
            f"{r['fraction']:.3f}",
            "yes" if r["fraction"] >= GOAL else "no",
        ]
        for name, r in results.items()
    ]
    print()
    head = f"{args.arch} @{args.size} {args.precision}, bs {args.bs}, {args.workers} workers"
    print(table(rows, [head, "loader-fed images/s", "one-batch images/s", "fraction", f">= {GOAL}"]))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    params = DataParams(args.classes, args.n, **({"min_px": 60, "max_px": 120} if args.smoke else {}))
    root = args.data or default_data_dir(params)
    started = time.perf_counter()
    ensure_data(root, params, workers=args.workers if not args.smoke else 1)
    work = args.work or Path(tempfile.mkdtemp(prefix="imgcls-step-fraction-"))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} torch {torch.__version__}, {gpu}, {cores()} cores; python "
        f"{sys.version.split()[0]}; data {root} ({args.classes} x {args.n} JPEGs, ready in "
        f"{time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    results = measure(args, root, work / "cache")
    report(results, args)
    if args.json is not None:
        args.json.write_text(json.dumps({"arch": args.arch, "bs": args.bs, "workers": args.workers, **results}))


if __name__ == "__main__":
    main()
