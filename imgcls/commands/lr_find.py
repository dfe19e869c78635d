"""`imgcls lr-find`: run the range test, print the suggestions, write the curve and its plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from imgcls.commands.summary import check_stage
from imgcls.errors import SpecError
from imgcls.evaluate.load import load_run
from imgcls.report.console import Console
from imgcls.report.plots import plot_lr_find
from imgcls.spec.schema import Spec
from imgcls.train.lr_find import SKIP_END, LRFindOptions, LRFindResult, lr_find, suggestion_points


def default_folder(spec: Spec) -> Path:
    """runs/<name>-lr_find: next to the runs, overwritten by the next lr-find of the same spec name."""
    return Path("runs") / f"{spec.name or 'run'}-lr_find"


def write_result(result: LRFindResult, out: Path, from_run: Path | None = None) -> list[Path]:
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
        "from_run": None if from_run is None else str(from_run),
        "suggestions": {s.name: (None if math.isnan(s.lr) else s.lr) for s in result.suggestions},
    }
    (out / "lr_find.json").write_text(json.dumps(summary, indent=2) + "\n")
    shown = len(curve.lrs) - SKIP_END if len(curve.lrs) > SKIP_END else len(curve.lrs)
    plot_lr_find(curve.lrs[:shown], curve.losses[:shown], result.suggestions, out / "lr_find.png")
    return [out / "lr_find.csv", out / "lr_find.json", out / "lr_find.png"]


def run_lr_find(
    spec: Spec | None,
    out: Path | None,
    options: LRFindOptions,
    quiet: bool = False,
    from_run: Path | None = None,
    stage: int | None = None,
) -> LRFindResult:
    """The range test on the spec's fresh model, or with `from_run` on that run's best weights (with the run's
    spec unless `spec` is given). `stage` is 1-based: default the first stage, or the stage of the run's best
    checkpoint (its size and batch size)."""
    console = Console(quiet)
    model, record, folder = None, None, out
    if from_run is not None:
        loaded = load_run(from_run)
        spec = spec or loaded.spec
        model, record = loaded.model, loaded.checkpoint.record
        folder = folder or from_run / "lr_find"
        stage = stage or min(record.position.stage, len(spec.train.stages) - 1) + 1
    if spec is None:
        raise SpecError("give a spec file, or --from RUN", hint="imgcls lr-find configs/demo.yaml")
    index = check_stage(spec, stage or 1)
    folder = folder or default_folder(spec)
    result = lr_find(spec, options, model=model, console=console, record=record, stage=index)
    curve = result.curve
    what = "frozen: head and batch norm only" if result.frozen else "the whole network"
    if from_run is not None:
        what += f", from {from_run}'s best weights"
    size = "x".join(map(str, result.size)) if result.size else "item size"
    with_callbacks = f", with {', '.join(result.callbacks)}" if result.callbacks else ""
    console.info(
        f"lr-find: {len(curve.lrs)} batches of {result.bs} at {size} px (stage {index + 1}), lr "
        f"{result.start_lr:.0e} -> {result.end_lr:.0e}, {what}{with_callbacks}; {curve.stop_reason}"
    )
    console.info("suggested learning rates:")
    for suggestion in result.suggestions:
        value = "n/a" if math.isnan(suggestion.lr) else f"{suggestion.lr:.2e}"
        console.info(f"  {suggestion.name:<8} {value:<9} ({suggestion.note})")
    written = write_result(result, folder, from_run)
    console.info(f"wrote {', '.join(str(p) for p in written)}")
    return result
