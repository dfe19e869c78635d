"""Loading a trained run back: its record, the pipeline it was trained with, and the model of a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from imgcls.augment.pipeline import BatchAugment
from imgcls.data.datablock import DataBundle, build_data
from imgcls.errors import ImgclsError, TrainingError
from imgcls.spec.schema import Spec
from imgcls.targets import Target
from imgcls.targets.calibration import Calibration
from imgcls.train.builder import Pipeline
from imgcls.train.checkpoint import Checkpoint, read_checkpoint
from imgcls.train.folders import given_splitter
from imgcls.train.record import CALIBRATION_FILE, CalibrationRecord
from imgcls.train.runtime import Runtime, resolve_runtime

INTERPRET = "interpret"  # imgcls interpret's default folder in the run, where its calibration.json is looked for


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


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """`best`, `last`, or a path to a checkpoint file."""
    if which in ("best", "last"):
        path = run_dir / "checkpoints" / f"{which}.safetensors"
        if not path.is_file() and not run_dir.is_dir():
            raise TrainingError(
                f"run folder not found: {run_dir}", hint="give the folder `imgcls train` printed, e.g. runs/demo"
            )
        return path
    return Path(which)


def load_run(run_dir: Path, which: str = "best", device: str | None = None, quiet: bool = True) -> LoadedRun:
    """The run's `which` checkpoint with the pipeline of its record (one process, on `device` if given)."""
    checkpoint = read_checkpoint(checkpoint_path(run_dir, which))
    spec = checkpoint.record.spec_model(str(checkpoint.path))
    if device is not None:
        spec = spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"device": device})})
    runtime = resolve_runtime(spec.runtime, distributed=False)
    factory = None
    if checkpoint.record.given_split:  # a cross-validation fold: its split is listed in the run, not in the spec
        splitter = given_splitter(run_dir)

        def factory() -> DataBundle:
            return build_data(spec.data, quiet, splitter=splitter)

    pipeline = Pipeline(spec, runtime, checkpoint.record, quiet=quiet, data_factory=factory)
    model = pipeline.trained_model(checkpoint.model_state, str(checkpoint.path))
    return LoadedRun(run_dir, checkpoint, pipeline, model)


__all__ = ["INTERPRET", "LoadedRun", "checkpoint_path", "load_run"]
