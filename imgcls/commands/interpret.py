"""`imgcls interpret`: the run's validation predictions through its target's report, into RUN/interpret/; a
classifier's calibration is kept there as calibration.json, where `export --calibrate` and `predict --calibrate`
find it."""

from __future__ import annotations

from pathlib import Path

from imgcls.evaluate.interpret import TOP_K, interpret
from imgcls.evaluate.load import INTERPRET, load_run
from imgcls.report.console import Console
from imgcls.train.record import CALIBRATION_FILE, CalibrationRecord


def run_interpret(
    run_dir: Path,
    which: str = "best",
    out: Path | None = None,
    k: int = TOP_K,
    min_count: int = 1,
    quiet: bool = False,
) -> Path:
    console = Console(quiet)
    loaded = load_run(run_dir, which)
    folder = out or run_dir / INTERPRET
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CALIBRATION_FILE).unlink(missing_ok=True)  # an earlier checkpoint's fit must not pass for this one's
    console.info(f"interpret: {loaded.checkpoint.path} on the validation items")
    result = interpret(loaded, folder, console, k, min_count)
    written = list(result.files)
    if result.calibration is not None:
        CalibrationRecord.of(result.calibration, loaded.checkpoint.path, loaded.checkpoint.record).write(
            folder / CALIBRATION_FILE
        )
        written.append(CALIBRATION_FILE)
        options = " --calibrate" if out is None else f" --calibration {folder / CALIBRATION_FILE}"
        if which != "best":
            options += f" --checkpoint {which}"
        console.info(f"  use it with: imgcls export {run_dir}{options}, or imgcls predict {run_dir} IMAGES{options}")
    console.info(f"wrote {folder}/ ({len(result.evaluated)} items): {', '.join(written)}")
    return folder
