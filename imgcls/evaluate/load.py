"""Loading a trained run back: its record, the pipeline it was trained with, and the model of a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from imgcls.augment.pipeline import BatchAugment
from imgcls.errors import TrainingError
from imgcls.spec.schema import Spec
from imgcls.targets import Target
from imgcls.train.builder import Pipeline
from imgcls.train.checkpoint import Checkpoint, read_checkpoint
from imgcls.train.record import ThresholdsRecord
from imgcls.train.runtime import Runtime, resolve_runtime


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


RUN_FOLDER_HOLDS = (
    "a run folder is what `imgcls train` writes: spec.yaml, metrics.csv and checkpoints/best.safetensors "
    "(and last.safetensors); give that folder, e.g. runs/demo"
)


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """`best`, `last`, or a path to a checkpoint file; a folder that is not a run is a clear error."""
    if which in ("best", "last"):
        path = run_dir / "checkpoints" / f"{which}.safetensors"
        if path.is_file():
            return path
        if not run_dir.is_dir():
            raise TrainingError(f"run folder not found: {run_dir}", hint=RUN_FOLDER_HOLDS)
        if not (run_dir / "checkpoints").is_dir():
            raise TrainingError(f"{run_dir} is not a run folder: it has no checkpoints/", hint=RUN_FOLDER_HOLDS)
        other = "last" if which == "best" else "best"
        raise TrainingError(
            f"{run_dir} has no checkpoints/{which}.safetensors",
            hint=f"training may have stopped before its first epoch ended; try --checkpoint {other}",
        )
    return Path(which)


def load_run(run_dir: Path, which: str = "best", device: str | None = None, quiet: bool = True) -> LoadedRun:
    """The run's `which` checkpoint with the pipeline of its record (one process, on `device` if given)."""
    checkpoint = read_checkpoint(checkpoint_path(run_dir, which))
    spec = checkpoint.record.spec_model(str(checkpoint.path))
    if device is not None:
        spec = spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"device": device})})
    runtime = resolve_runtime(spec.runtime, distributed=False)
    thresholds = ThresholdsRecord.load(run_dir, checkpoint.record.target.vocab)
    pipeline = Pipeline(spec, runtime, checkpoint.record, quiet=quiet, thresholds=thresholds)
    model = pipeline.trained_model(checkpoint.model_state, str(checkpoint.path))
    return LoadedRun(run_dir, checkpoint, pipeline, model)


__all__ = ["RUN_FOLDER_HOLDS", "LoadedRun", "checkpoint_path", "load_run"]
