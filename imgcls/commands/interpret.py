"""`imgcls interpret`: the run's validation predictions through its target's report, into RUN/interpret/; a
classifier's calibration is kept there as calibration.json (for `export --calibrate` and `predict --calibrate`);
with --save-thresholds, a multi-label run's per-label thresholds go into RUN/thresholds.json (predict and export
use them)."""

from __future__ import annotations

from pathlib import Path

from imgcls.evaluate.interpret import TOP_K, interpret
from imgcls.evaluate.load import INTERPRET, DataAccess, LoadedRun, load_run
from imgcls.report.console import Console
from imgcls.targets.base import Evaluated, threshold_text
from imgcls.train.record import CALIBRATION_FILE, THRESHOLDS_FILE, CalibrationRecord, ThresholdsRecord


def run_interpret(
    run_dir: Path,
    which: str = "best",
    out: Path | None = None,
    k: int = TOP_K,
    min_count: int = 1,
    quiet: bool = False,
    save_thresholds: bool = False,
    *,
    access: DataAccess | None = None,
) -> Path:
    console = Console(quiet)
    loaded = load_run(run_dir, which, access=access or DataAccess(), console=console)
    if save_thresholds:
        loaded.target.require_per_label("--save-thresholds")  # before the validation pass
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
    if save_thresholds:
        save_label_thresholds(loaded, result.evaluated, console)
    return folder


def save_label_thresholds(loaded: LoadedRun, result: Evaluated, console: Console) -> Path:
    """Choose one threshold per label on the validation predictions and write RUN/thresholds.json."""
    target = loaded.target
    thresholds, chosen_by = target.choose_thresholds(result)
    record = ThresholdsRecord(
        labels=list(target.vocab),
        thresholds=list(thresholds),
        chosen_by=chosen_by,
        checkpoint=str(loaded.checkpoint.path),
    )
    path = loaded.run_dir / THRESHOLDS_FILE
    path.write_text(record.to_json())
    console.info(f"saved {path}: {threshold_text(thresholds, target.vocab)} ({chosen_by})")
    console.info("imgcls predict and imgcls export of this run now decide with them (--thresh overrides)")
    return path
