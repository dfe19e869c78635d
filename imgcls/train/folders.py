"""Choosing a run folder, and reading one back to resume it."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from imgcls.errors import SpecError, TrainingError
from imgcls.spec.load import apply_override, spec_from_dict
from imgcls.spec.schema import Spec
from imgcls.train.checkpoint import Checkpoint, read_checkpoint
from imgcls.train.runtime import Runtime


def _free_folder(base: Path) -> Path:
    """runs/<name>, or runs/<name>-2, -3, ... when taken: a run never writes into another run's folder."""
    if not base.exists():
        return base
    number = 2
    while base.with_name(f"{base.name}-{number}").exists():
        number += 1
    return base.with_name(f"{base.name}-{number}")


def start_run(spec: Spec, out: Path | None, runtime: Runtime) -> Path:
    """The new run's folder (created by rank 0 and shared with every other rank)."""
    if out is not None and (out / "checkpoints").exists():
        raise TrainingError(
            f"{out} already holds a run",
            hint=f"continue it with `imgcls train --resume {out}`, or choose another --out",
        )
    chosen: list[Path | None] = [None]
    if runtime.is_main:
        chosen = [out or _free_folder(Path("runs") / (spec.name or "run"))]
    if runtime.distributed:
        dist.broadcast_object_list(chosen, src=0)
    folder = chosen[0]
    assert folder is not None
    if runtime.is_main:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


# What may change when a run resumes: where and how fast it runs, not what it computes.
_RESUMABLE_OVERRIDES = ("runtime.", "data.num_workers")


def resume_run(run_dir: Path, overrides: list[str] | None) -> tuple[Spec, Checkpoint]:
    """The spec a run was started with and its last checkpoint."""
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "last.safetensors")
    raw = checkpoint.record.spec
    for assignment in overrides or []:
        if not assignment.startswith(_RESUMABLE_OVERRIDES):
            raise SpecError(
                f"--set {assignment}: a resumed run keeps its spec; only runtime.* and data.num_workers may change",
                hint="start a new run to change anything else",
            )
        apply_override(raw, assignment)
    return spec_from_dict(raw, origin=str(checkpoint.path)), checkpoint
