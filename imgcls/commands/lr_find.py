"""`imgcls lr-find`: run the range test, print the suggestions, write the curve and its plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from imgcls.report.console import Console
from imgcls.report.plots import plot_lr_find
from imgcls.spec.schema import Spec
from imgcls.train.lr_find import SKIP_END, LRFindOptions, LRFindResult, lr_find, suggestion_points


def default_folder(spec: Spec) -> Path:
    """runs/<name>-lr_find: next to the runs, overwritten by the next lr-find of the same spec name."""
    return Path("runs") / f"{spec.name or 'run'}-lr_find"


def write_result(result: LRFindResult, out: Path) -> list[Path]:
    """lr_find.csv (every recorded point, and whether the suggestions used it), lr_find.json, lr_find.png."""
    out.mkdir(parents=True, exist_ok=True)
    curve = result.curve
    start = result.num_it // 10
    used_lrs, _ = suggestion_points(curve.lrs, curve.losses, result.num_it)
    used = [start <= i < start + len(used_lrs) for i in range(len(curve.lrs))]
    frame = pd.DataFrame({"lr": curve.lrs, "loss": curve.losses, "used_for_suggestions": used})
    frame.to_csv(out / "lr_find.csv", index=False, float_format="%.8g")
    summary = {
        "start_lr": result.start_lr,
        "end_lr": result.end_lr,
        "num_it": result.num_it,
        "batches": len(curve.lrs),
        "stop_reason": curve.stop_reason,
        "frozen": result.frozen,
        "size": result.size,
        "bs": result.bs,
        "callbacks": result.callbacks,
        "suggestions": {s.name: (None if math.isnan(s.lr) else s.lr) for s in result.suggestions},
    }
    (out / "lr_find.json").write_text(json.dumps(summary, indent=2) + "\n")
    shown = len(curve.lrs) - SKIP_END if len(curve.lrs) > SKIP_END else len(curve.lrs)
    plot_lr_find(curve.lrs[:shown], curve.losses[:shown], result.suggestions, out / "lr_find.png")
    return [out / "lr_find.csv", out / "lr_find.json", out / "lr_find.png"]


def run_lr_find(spec: Spec, out: Path | None, options: LRFindOptions, quiet: bool = False) -> LRFindResult:
    console = Console(quiet)
    folder = out or default_folder(spec)
    result = lr_find(spec, options, console=console)
    curve = result.curve
    what = "frozen: head and batch norm only" if result.frozen else "the whole network"
    size = "x".join(map(str, result.size)) if result.size else "item size"
    with_callbacks = f", with {', '.join(result.callbacks)}" if result.callbacks else ""
    console.info(
        f"lr-find: {len(curve.lrs)} batches of {result.bs} at {size} px, lr {result.start_lr:.0e} -> "
        f"{result.end_lr:.0e}, {what}{with_callbacks}; {curve.stop_reason}"
    )
    console.info("suggested learning rates:")
    for suggestion in result.suggestions:
        value = "n/a" if math.isnan(suggestion.lr) else f"{suggestion.lr:.2e}"
        console.info(f"  {suggestion.name:<8} {value:<9} ({suggestion.note})")
    written = write_result(result, folder)
    console.info(f"wrote {', '.join(str(p) for p in written)}")
    return result
