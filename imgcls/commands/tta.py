"""`imgcls tta-eval`: print the plain and TTA metrics side by side; write tta.csv and tta.json."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from imgcls.evaluate.load import DataAccess, load_run
from imgcls.evaluate.tta import BETA, N_AUGMENTED, TTAResult, tta
from imgcls.report.console import Console


def write_tta(result: TTAResult, folder: Path) -> list[Path]:
    rows = [{"metric": name, "plain": result.plain[name], "tta": result.tta[name]} for name in result.plain]
    pd.DataFrame(rows).to_csv(folder / "tta.csv", index=False, float_format="%.6g")
    summary = {
        "checkpoint": result.checkpoint,
        "items": result.items,
        "n_augmented": result.n,
        "beta": None if result.use_max else result.beta,
        "use_max": result.use_max,
        "plain": result.plain,
        "tta": result.tta,
        "augmented_passes": result.passes,
    }
    (folder / "tta.json").write_text(json.dumps(summary, indent=2) + "\n")
    return [folder / "tta.csv", folder / "tta.json"]


def run_tta(
    run_dir: Path,
    which: str = "best",
    n: int = N_AUGMENTED,
    beta: float = BETA,
    use_max: bool = False,
    quiet: bool = False,
    *,
    access: DataAccess | None = None,
) -> TTAResult:
    console = Console(quiet)
    loaded = load_run(run_dir, which, access=access or DataAccess(), console=console)
    result = tta(loaded, n, beta, use_max, console)
    how = "max(plain, max(augmented))" if use_max else f"{1 - beta:g} * mean(augmented) + {beta:g} * plain"
    console.info(
        f"TTA on {result.items} validation items, {result.checkpoint} checkpoint: {n} augmented pass(es) with the "
        f"training transforms + 1 plain pass; {how}"
    )
    console.info(f"{'metric':<16}{'plain':>10}{'tta':>10}{'change':>10}")
    for name in result.plain:
        before, after = result.plain[name], result.tta[name]
        console.info(f"{name:<16}{before:>10.4f}{after:>10.4f}{after - before:>+10.4f}")
    written = write_tta(result, run_dir)
    console.info(f"wrote {', '.join(str(p) for p in written)}")
    return result
