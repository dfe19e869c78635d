"""`imgcls interpret`: the run's validation predictions through its target's report, into RUN/interpret/."""

from __future__ import annotations

from pathlib import Path

from imgcls.evaluate.interpret import TOP_K, interpret
from imgcls.evaluate.load import load_run
from imgcls.report.console import Console


def run_interpret(
    run_dir: Path,
    which: str = "best",
    out: Path | None = None,
    k: int = TOP_K,
    min_count: int = 1,
    quiet: bool = False,
    *,
    allow_data_change: bool = False,
    trust_spec: bool = False,
) -> Path:
    console = Console(quiet)
    loaded = load_run(run_dir, which, allow_data_change=allow_data_change, trust_spec=trust_spec, console=console)
    folder = out or run_dir / "interpret"
    folder.mkdir(parents=True, exist_ok=True)
    console.info(f"interpret: {loaded.checkpoint.path} on the validation items")
    result, written = interpret(loaded, folder, console, k, min_count)
    console.info(f"wrote {folder}/ ({len(result)} items): {', '.join(written)}")
    return folder
