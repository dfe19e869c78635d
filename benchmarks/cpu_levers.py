"""One training step's images/s under runtime variants (precision, channels_last, compile, threads), alternating.

    PYTHONPATH=. .venv/bin/python benchmarks/cpu_levers.py configs/fashion_mnist_fast.yaml \
        --set data.path=/tmp/fmnist-6k --variant fp32 runtime.precision=fp32 --variant bf16 runtime.precision=bf16

The first variant is the baseline. Each round measures every variant in turn (the order rotated every round) on
one batch the resident loader delivered, `--batches` steps after 3 untimed ones (compile happens there). Printed:
images/s per round, the median with min-max, and the ratio to the baseline (median and min-max of the per-round
ratios, so that drift of the machine between rounds cancels).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from bench_common import cpu_model, table
from step_ceiling import _pipeline, _state, _sync


def step_rate(pipeline: Any, batches: int) -> float:
    """images/s of train_batch on one batch kept in memory."""
    from imgcls.train.callbacks.base import CallbackList
    from imgcls.train.loop import FitContext, InterruptFlag, train_batch

    loader = pipeline.stage_loaders(0).train
    loader.set_epoch(0)
    batch = next(iter(loader))
    state = _state(pipeline)
    ctx = FitContext(loader, dict, CallbackList([]), pipeline.runtime.grad_scaler(), InterruptFlag(), int, 1 << 30)
    for _ in range(3):
        train_batch(state, ctx, batch)
    _sync(pipeline.runtime.device)
    start = time.perf_counter()
    for _ in range(batches):
        train_batch(state, ctx, batch)
    _sync(pipeline.runtime.device)
    return batches * batch.images.shape[0] / (time.perf_counter() - start)


def _mid(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a spec override for all")
    parser.add_argument(
        "--variant", nargs="+", action="append", required=True, metavar=("NAME", "OVERRIDE"), help="name overrides..."
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args(argv)
    variants = {name: overrides for name, *overrides in args.variant}
    names = list(variants)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {cpu_model()}; {args.config} {' '.join(args.overrides)}")
    rates: dict[str, list[float]] = {name: [] for name in names}
    for number in range(args.rounds):
        order = names[number % len(names) :] + names[: number % len(names)]
        for name in order:
            pipeline = _pipeline(args.config, "resident", [*args.overrides, *variants[name]])
            rates[name].append(step_rate(pipeline, args.batches))
            runtime = pipeline.runtime
            print(
                f"  round {number + 1} {name:14s} {rates[name][-1]:7.0f} images/s  ({runtime.precision}, "
                f"{runtime.threads} thread(s), channels_last {runtime.channels_last}, compile {runtime.compile})"
            )
    base = rates[names[0]]
    rows = []
    for name in names:
        ratios = [r / b for r, b in zip(rates[name], base, strict=True)]
        rows.append([name, " ".join(variants[name]) or "-", _mid(rates[name]), _mid(ratios, 2)])
    print()
    print(table(rows, ["variant", "overrides", "images/s, median (min-max)", f"ratio to {names[0]}"]))


if __name__ == "__main__":
    main()
