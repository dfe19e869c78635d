"""The step ceiling of a spec: its training step on a batch already in memory (forward, backward, optimizer) in
images/s, next to the images/s the real data path delivers to that same step, per data mode. Their ratio is the
data path's fraction of the ceiling (issue 19's goal: at least 0.9 in resident mode).

    PYTHONPATH=. .venv/bin/python benchmarks/step_ceiling.py configs/fashion_mnist_fast.yaml \
        [--modes resident stream] [--rounds 3] [--batches 60] [--set runtime.precision=bf16 ...]

Each round, for each mode in turn (the order rotated every round, so that machine noise falls on all alike), the
step is fed `--batches` batches by that mode's loader ("delivered"), then the same number of steps on one batch
kept from it ("ceiling"). The schedule does not move (the one-cycle position stays near 0), so every step costs
the same. Printed: images/s per mode and round, median and spread, and the fraction delivered / ceiling.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def _pipeline(config: Path, mode: str, overrides: list[str]) -> Any:
    from imgcls.spec import load_spec
    from imgcls.train.builder import Pipeline
    from imgcls.train.runtime import resolve_runtime

    spec = load_spec(config, [*overrides, f"data.mode={mode}"])
    return Pipeline(spec, resolve_runtime(spec.runtime, distributed=False))


def _state(pipeline: Any) -> Any:
    import torch

    from imgcls.train.builder import place_model, wrap_model
    from imgcls.train.optim import build_optimizer
    from imgcls.train.schedule import stage_phases
    from imgcls.train.state import Position, TrainState

    torch.manual_seed(0)
    model = place_model(pipeline.new_model(), pipeline.runtime)
    phase = stage_phases(pipeline.spec.train.stages[0])[-1]
    optimizer = build_optimizer(model, model.param_groups(), pipeline.spec.train, phase)
    state = TrainState(
        wrap_model(model, pipeline.runtime),
        optimizer,
        pipeline.loss,
        pipeline.runtime,
        pipeline.target,
        Path(),
        phase,
        phase.name,
        Position(),
    )
    state.n_batches = 1 << 30  # keeps the one-cycle position near 0: every step costs the same
    state.model.train()
    return state


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(pipeline: Any, batches: int, epoch: int) -> tuple[float, float]:
    """(delivered images/s, ceiling images/s) over `batches` steps each."""
    from imgcls.train.callbacks.base import CallbackList
    from imgcls.train.loop import FitContext, InterruptFlag, train_batch

    loader = pipeline.stage_loaders(0).train
    state = _state(pipeline)
    ctx = FitContext(loader, dict, CallbackList([]), pipeline.runtime.grad_scaler(), InterruptFlag(), int, 1 << 30)
    device = pipeline.runtime.device
    loader.set_epoch(epoch)
    kept, n, start = None, 0, 0.0
    for number, batch in enumerate(loader):
        if number == 1:  # the first batch pays for worker start and lazy set-up: not timed
            _sync(device)
            start, n = time.perf_counter(), 0
        if number > batches:
            break
        train_batch(state, ctx, batch)
        n += batch.images.shape[0]
        kept = kept or batch
    _sync(device)
    delivered = n / (time.perf_counter() - start)
    assert kept is not None
    start = time.perf_counter()
    for _ in range(batches):
        train_batch(state, ctx, kept)
    _sync(device)
    ceiling = batches * kept.images.shape[0] / (time.perf_counter() - start)
    return delivered, ceiling


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--modes", nargs="+", default=["resident", "stream"], choices=["resident", "stream", "cache"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=60, help="timed steps per measurement")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a spec override")
    args = parser.parse_args(argv)
    pipelines = {mode: _pipeline(args.config, mode, args.overrides) for mode in args.modes}
    first = next(iter(pipelines.values()))
    runtime = first.runtime
    print(
        f"{args.config}: {first.spec.model.arch}, bs {first.bs(0)}, size {first.size(0)}, {runtime.device}, "
        f"{runtime.precision}, {runtime.threads} thread(s), channels_last {runtime.channels_last}, "
        f"compile {runtime.compile}"
    )
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in args.modes}
    for number in range(args.rounds):
        order = args.modes[number % len(args.modes) :] + args.modes[: number % len(args.modes)]
        for mode in order:
            delivered, ceiling = measure(pipelines[mode], args.batches, number)
            results[mode].append((delivered, ceiling))
            print(f"  round {number + 1} {mode:8s} delivered {delivered:7.0f}  ceiling {ceiling:7.0f} images/s")
    print(f"\n{'mode':10s}{'delivered images/s':>26s}{'ceiling images/s':>26s}{'fraction':>22s}")
    for mode, pairs in results.items():
        fractions = [d / c for d, c in pairs]
        print(
            f"{mode:10s}{_spread([d for d, _ in pairs]):>26s}{_spread([c for _, c in pairs]):>26s}"
            f"{statistics.median(fractions):>12.3f} ({min(fractions):.3f}-{max(fractions):.3f})"
        )


if __name__ == "__main__":
    sys.exit(main())
