"""Choosing a run folder, and reading one back to resume it."""

from __future__ import annotations

import json
from pathlib import Path

import torch.distributed as dist

from imgcls.data.datablock import Splitter
from imgcls.data.items import ItemList
from imgcls.data.splits import SplitIndices, split_from_names
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


SPLIT_FILE = "split.json"


def split_listing(items: ItemList, split: SplitIndices, given: bool, vocab: list[str]) -> dict[str, object]:
    """split.json: the validation items (and the training items too when the split was given, not the spec's:
    they cannot be made again from the spec), the training count and the vocab."""
    listing: dict[str, object] = {"train": len(split.train)}
    if given:
        listing["train_items"] = [items.relative(int(i)) for i in split.train]
    listing["valid_items"] = [items.relative(int(i)) for i in split.valid]
    listing["vocab"] = vocab
    return listing


def given_splitter(run_dir: Path) -> Splitter:
    """The split of a run trained on a given split (RunRecord.given_split), read back from its split.json."""
    file = run_dir / SPLIT_FILE
    try:
        listing = json.loads(file.read_text(encoding="utf-8"))
        train, valid = [str(n) for n in listing["train_items"]], [str(n) for n in listing["valid_items"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TrainingError(
            f"{file}: cannot read the items of the run's given split ({type(err).__name__}: {err})",
            hint="the run was trained on a split given by imgcls audit --folds; its split.json must stay with it",
        ) from None
    return lambda items: split_from_names(items, train, valid, str(file))
