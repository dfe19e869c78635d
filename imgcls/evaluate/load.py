"""Loading a trained run back: its record, the pipeline it was trained with, and the model of a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from imgcls.augment.pipeline import BatchAugment
from imgcls.data.datablock import DataBundle
from imgcls.errors import ImgclsError, TrainingError
from imgcls.report.console import Console
from imgcls.spec.schema import Spec
from imgcls.targets import Target
from imgcls.targets.calibration import Calibration
from imgcls.train.builder import Pipeline
from imgcls.train.checkpoint import Checkpoint, read_checkpoint
from imgcls.train.folders import recorded_data
from imgcls.train.record import CALIBRATION_FILE, CalibrationRecord, ThresholdsRecord
from imgcls.train.runtime import Runtime, resolve_runtime

INTERPRET = "interpret"  # imgcls interpret's default folder in the run, where its calibration.json is looked for


@dataclass(frozen=True)
class DataAccess:
    """How a command reads a run's data: `allow_change` goes on when the files differ from items.csv (the recorded
    items, split and vocab are used); `trust_spec` runs the stored spec's labeller (it may import code)."""

    allow_change: bool = False
    trust_spec: bool = False


@dataclass
class LoadedRun:
    """A run folder's checkpoint, the pipeline its record rebuilds, and the trained model (eval mode, on the
    device)."""

    run_dir: Path
    checkpoint: Checkpoint
    pipeline: Pipeline
    model: nn.Module

    @property
    def spec(self) -> Spec:
        return self.pipeline.spec

    @property
    def target(self) -> Target:
        return self.pipeline.target

    @property
    def runtime(self) -> Runtime:
        return self.pipeline.runtime

    @property
    def size(self) -> tuple[int, int] | None:
        return self.pipeline.eval_size

    @property
    def augment(self) -> BatchAugment:
        """The batch transform at the checkpoint's size, normalized as the run was."""
        return self.pipeline.augment(self.size)

    def calibration_record(self, file: Path | None = None) -> CalibrationRecord:
        """The calibration `imgcls interpret` fitted for this checkpoint (default RUN/interpret/calibration.json);
        one fitted for another checkpoint, or for an earlier model of the same name, is refused."""
        if self.target.calibration_method is None:
            raise ImgclsError(
                f"calibration needs a classifier; {self.run_dir} predicts {self.target.kind} targets",
                hint="leave --calibrate out for point and regression models",
            )
        file = file or self.run_dir / INTERPRET / CALIBRATION_FILE
        record = CalibrationRecord.read(file)
        n_values = len(record.a) if record.method == "platt" else 1
        if record.method != self.target.calibration_method or n_values not in (1, self.target.n_out):
            raise TrainingError(
                f"{file} holds {record.method} scaling of {n_values} output(s); this run's {self.target.n_out} "
                f"{self.target.kind} outputs are calibrated by {self.target.calibration_method} scaling",
                hint=f"fit it again: imgcls interpret {self.run_dir}",
            )
        if not record.fits(self.checkpoint.record):
            raise TrainingError(
                f"{file} was fitted for {record.checkpoint} ({record.checkpoint_kind}, written "
                f"{record.checkpoint_written}), not for {self.checkpoint.path} ({self.checkpoint.record.kind}, "
                f"written {self.checkpoint.record.written})",
                hint=f"fit it again: imgcls interpret {self.run_dir} --checkpoint {self.checkpoint.record.kind}",
            )
        return record

    def calibration(self, file: Path | None = None) -> Calibration:
        return self.calibration_record(file).calibration()


RUN_FOLDER_HOLDS = (
    "a run folder is what `imgcls train` writes: spec.yaml, metrics.csv and checkpoints/best.safetensors "
    "(and last.safetensors); give that folder, e.g. runs/demo"
)


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """`best`, `last`, or a path to a checkpoint file; a folder that is not a run is a clear error."""
    if which not in ("best", "last"):
        return Path(which)
    path = run_dir / "checkpoints" / f"{which}.safetensors"
    if path.is_file():
        return path
    if not run_dir.is_dir():
        raise TrainingError(f"run folder not found: {run_dir}", hint=RUN_FOLDER_HOLDS)
    if not (run_dir / "checkpoints").is_dir():
        raise TrainingError(f"{run_dir} is not a run folder: it has no checkpoints/", hint=RUN_FOLDER_HOLDS)
    other = "last" if which == "best" else "best"
    if not (run_dir / "checkpoints" / f"{other}.safetensors").is_file():
        raise TrainingError(f"{run_dir} has no checkpoint yet", hint="it stopped before its first checkpoint")
    why = ": no epoch improved the monitored metric, or the run stopped first" if which == "best" else ""
    raise TrainingError(
        f"{run_dir} has no {which} checkpoint (checkpoints/{which}.safetensors)", hint=f"use --checkpoint {other}{why}"
    )


def load_run(
    run_dir: Path,
    which: str = "best",
    device: str | None = None,
    quiet: bool = True,
    *,
    access: DataAccess = DataAccess(),
    console: Console | None = None,
) -> LoadedRun:
    """The run's `which` checkpoint with the pipeline of its record (one process, on `device` if given).

    Loading is reading data: the model is rebuilt from the checkpoint's weights alone (never pretrained, never
    from a weights file), the validation items come from the run's items.csv (its labeller is not run, nothing is
    downloaded or generated) and its presize cache is read, never written. `access.trust_spec` runs the stored spec's
    labeller instead, to compare the classes as well as the files."""
    checkpoint = read_checkpoint(checkpoint_path(run_dir, which))
    record = checkpoint.record
    spec = record.spec_model(str(checkpoint.path))
    if device is not None:
        spec = spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"device": device})})
    runtime = resolve_runtime(spec.runtime, distributed=False)

    def data() -> DataBundle:
        return recorded_data(
            spec, record, run_dir, relabel=access.trust_spec, allow_change=access.allow_change, console=console
        )

    thresholds = ThresholdsRecord.load(run_dir, record.target.vocab)
    pipeline = Pipeline(
        spec, runtime, record, quiet=quiet, data_factory=data, writes_cache=False, thresholds=thresholds
    )
    model = pipeline.trained_model(checkpoint.model_state, str(checkpoint.path))
    return LoadedRun(run_dir, checkpoint, pipeline, model)


__all__ = ["INTERPRET", "RUN_FOLDER_HOLDS", "DataAccess", "LoadedRun", "checkpoint_path", "load_run"]
