"""Train a spec (as `imgcls train` does) and report the wall time, the validation metric per epoch, and the time
at which the metric first reached a target (issue 18, steps 2 and 4).

    PYTHONPATH=. python3 benchmarks/train_to_target.py configs/fashion_mnist.yaml --target 0.94 --stop-at-target
    PYTHONPATH=. python3 benchmarks/train_to_target.py configs/demo.yaml --set runtime.compile=true

Times are wall-clock seconds from the call of imgcls.train.run.train (so they include building the data,
loading a resident dataset, measuring normalization, compiling), plus the sum of the epochs' own seconds.
`--stop-at-target` ends training after the first epoch at or past the target (the schedule is cut short there);
otherwise it runs the whole epoch budget.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("spec", type=Path, help="the spec file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="dotted key=value, as imgcls")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<name>, made free)")
    parser.add_argument("--metric", default="accuracy", help="the metrics.csv column to watch (default accuracy)")
    parser.add_argument("--target", type=float, default=None, help="the value to reach (higher is better)")
    parser.add_argument("--stop-at-target", action="store_true", help="end training once the target is reached")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    return parser.parse_args(argv)


def make_watch(metric: str, target: float | None, stop: bool, started: float) -> Any:
    """A callback that notes each epoch's metric and wall time, and the first epoch at or past `target`."""
    from imgcls.train.callbacks.base import Callback

    class Watch(Callback):
        def __init__(self) -> None:
            self.epochs: list[dict[str, float]] = []
            self.reached: dict[str, float] | None = None

        def on_epoch_end(self, state: Any) -> None:
            value = float(state.metrics.get(metric, float("nan")))
            row = {
                "epoch": len(self.epochs) + 1,
                metric: value,
                "wall_seconds": time.perf_counter() - started,
                "epoch_seconds": float(state.metrics.get("seconds", 0.0)),
            }
            self.epochs.append(row)
            if target is not None and self.reached is None and value >= target:
                self.reached = row
                if stop:
                    state.stop = True

    return Watch()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from imgcls.spec import load_spec
    from imgcls.train.run import train

    spec = load_spec(args.spec, args.overrides)
    started = time.perf_counter()
    watch = make_watch(args.metric, args.target, args.stop_at_target, started)
    run = train(spec, args.out, quiet=args.quiet, callbacks=[watch])
    total = time.perf_counter() - started
    epochs = watch.epochs
    final = epochs[-1][args.metric] if epochs else float("nan")
    best = max((e[args.metric] for e in epochs), default=float("nan"))
    epoch_seconds = sum(e["epoch_seconds"] for e in epochs)
    print(
        f"\ntrained {len(epochs)} epoch(s) in {total:.1f} s wall ({epoch_seconds:.1f} s in the epochs): final "
        f"{args.metric} {final:.4f}, best {best:.4f}; run folder {run}"
    )
    if args.target is not None:
        if watch.reached is not None:
            hit = watch.reached
            print(
                f"reached {args.metric} {hit[args.metric]:.4f} >= {args.target} at epoch {hit['epoch']:.0f}, "
                f"{hit['wall_seconds']:.1f} s after the start"
            )
        else:
            print(f"did not reach {args.metric} {args.target} within the {len(epochs)}-epoch budget")
    result = {
        "run": str(run),
        "epochs": epochs,
        "seconds": total,
        "epoch_seconds": epoch_seconds,
        "final": final,
        "best": best,
        "metric": args.metric,
        "target": args.target,
        "reached": watch.reached,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
