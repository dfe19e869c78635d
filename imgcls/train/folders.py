"""Run folders: choosing one for a new run, reading one back to resume or evaluate it.

A run folder is data to whoever reads it. Resuming compares its data manifest (items.csv) with the files on disk;
evaluating it reads the manifest instead of running its labeller, and fetches nothing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch.distributed as dist

from imgcls.data.datablock import DataBundle, build_data
from imgcls.data.item_tfms import build_item_transform
from imgcls.data.items import ItemList, collect_items
from imgcls.data.manifest import MANIFEST, DataChanges, DataManifest
from imgcls.data.sources import resolve_root
from imgcls.data.splits import SplitIndices
from imgcls.errors import DataError, SpecError, TrainingError
from imgcls.report.console import Console
from imgcls.spec.load import apply_override, spec_from_dict
from imgcls.spec.schema import Spec
from imgcls.train.checkpoint import Checkpoint, read_checkpoint
from imgcls.train.record import RunRecord
from imgcls.train.runtime import Runtime

LAST = Path("checkpoints") / "last.safetensors"
# What may change when a run resumes: where and how fast it runs, and whether unreadable images are left out;
# not what it computes.
_RESUMABLE_OVERRIDES = ("runtime.", "data.num_workers=", "data.on_bad_image=")


def is_run_folder(folder: Path) -> bool:
    """Whether `folder` was started by `imgcls train` (its env.json names imgcls, or it has a checkpoint)."""
    if (folder / LAST).is_file():
        return True
    try:
        env = json.loads((folder / "env.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(env, dict) and "imgcls" in env.get("packages", {})


def _free_folder(base: Path) -> Path:
    """runs/<name>, or runs/<name>-2, -3, ... when taken: a run never writes into another run's folder."""
    if not base.exists():
        return base
    number = 2
    while base.with_name(f"{base.name}-{number}").exists():
        number += 1
    return base.with_name(f"{base.name}-{number}")


def check_out_folder(out: Path) -> None:
    """--out must be new, empty, or a run that never wrote a checkpoint (killed during its first one)."""
    if (out / LAST).is_file():
        raise TrainingError(
            f"{out} already holds a run",
            hint=f"continue it with `imgcls train --resume {out}`, or choose another --out",
        )
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--out {out} is a file, not a folder", hint="choose a new folder for the run")
    if out.is_dir() and any(out.iterdir()) and not is_run_folder(out):
        raise TrainingError(
            f"--out {out} is not empty and is not an imgcls run folder: training would overwrite its files",
            hint="choose a new or empty folder (imgcls train creates it)",
        )


def start_run(spec: Spec, out: Path | None, runtime: Runtime) -> Path:
    """The new run's folder (chosen and created by rank 0, shared with every other rank)."""
    if out is not None:
        check_out_folder(out)
    chosen: list[Path | None] = [None]
    if runtime.is_main:
        chosen = [out or _free_folder(Path("runs") / (spec.name or "run"))]
    if runtime.distributed:
        dist.broadcast_object_list(chosen, src=0)
    folder = chosen[0]
    assert folder is not None
    if runtime.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in (folder / "checkpoints").glob(".*.tmp"):  # a write that a kill cut short
            stale.unlink(missing_ok=True)
    return folder


def resume_run(run_dir: Path, overrides: list[str] | None) -> tuple[Spec, Checkpoint | None]:
    """The spec a run was started with and its last checkpoint; no checkpoint (a run killed before its first
    one) means the run starts again from its spec.yaml."""
    for assignment in overrides or []:
        if not assignment.startswith(_RESUMABLE_OVERRIDES):
            raise SpecError(
                f"--set {assignment}: a resumed run keeps its spec; only runtime.*, data.num_workers and "
                "data.on_bad_image may change",
                hint="start a new run to change anything else",
            )
    if not (run_dir / LAST).is_file():
        if not (run_dir / "spec.yaml").is_file():
            raise TrainingError(
                f"{run_dir} is not a run folder (no {LAST} and no spec.yaml)",
                hint="give the folder `imgcls train` printed, e.g. runs/demo",
            )
        from imgcls.spec.load import load_spec

        return load_spec(run_dir / "spec.yaml", [*(overrides or []), f"name={run_dir.name}"]), None
    checkpoint = read_checkpoint(run_dir / LAST)
    raw = checkpoint.record.spec
    for assignment in overrides or []:
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


# --- the data of a run ---------------------------------------------------------------------------------------


def _current_items(root: Path, spec: Spec) -> list[str] | None:
    """The items the spec finds under `root` now (a folder walk or the items CSV: no labeller), or None."""
    try:
        items = collect_items(root, spec.data.items)
    except DataError:
        return None
    return [items.relative(i) for i in range(len(items))]


def _changed(run_dir: Path, changes: DataChanges, relabelled: bool) -> DataError:
    how = (
        "resume or evaluate it on the data it was trained on; or pass --allow-data-change to go on with the "
        "recorded items, split and vocab (items that are gone are left out, new ones ignored)"
    )
    what = "the data now differs from the run's items.csv" + (" (labels re-read)" if relabelled else "")
    return DataError(f"{run_dir}: {what}:\n  " + "\n  ".join(changes.lines()), hint=how)


def recorded_data(
    spec: Spec,
    record: RunRecord,
    run_dir: Path,
    *,
    relabel: bool = False,
    allow_change: bool = False,
    console: Console | None = None,
) -> DataBundle:
    """The data a run was trained on, from its manifest: its items, split and encoded targets. `relabel` runs
    the spec's labeller on the data as it is now (resume; --trust-spec) to compare classes as well as files;
    otherwise nothing is run and nothing fetched. Any difference stops, unless `allow_change`."""
    if record.data is None:
        if not relabel:
            raise DataError(
                f"{run_dir} was written by an imgcls without data manifests (no items.csv)",
                hint="pass --trust-spec to rebuild its data from its spec (this runs the spec's labeller)",
            )
        return build_data(spec.data, quiet=True)
    manifest = DataManifest.read(run_dir, record.data.fingerprint, record.data.dtype)
    target = record.target.block()
    if relabel:
        built = build_data(spec.data, quiet=True)
        root, changes = built.items.root, manifest.compare(built, target)
        if record.given_split:  # a fold's split is not the spec's: only files and classes are compared
            changes = replace(changes, split_moved=0)
    else:
        root = resolve_root(spec.data, quiet=True, fetch=False)
        changes = manifest.changes(root, _current_items(root, spec))
    if changes and not allow_change:
        raise _changed(run_dir, changes, relabel)
    if changes and console is not None:
        for line in changes.lines():
            console.warn(f"data changed since training (--allow-data-change): {line}")
    data = manifest.bundle(spec.data, root, target, build_item_transform(spec.data.item_tfm))
    skipped = {entry.path for entry in record.data.skipped}
    if skipped:
        data = data.without({i for i in range(len(data.items)) if data.items.relative(i) in skipped})
    return data


__all__ = [
    "LAST",
    "MANIFEST",
    "check_out_folder",
    "is_run_folder",
    "recorded_data",
    "resume_run",
    "start_run",
]
