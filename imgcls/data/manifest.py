"""The data manifest of a run: every item it was trained on, with its split, encoded target, file size and
modification time, written once as `items.csv` in the run folder.

It is what a run knows about its data without running anything: resume and every command that evaluates a run
compare it with the files on disk (a renamed class folder, added or removed images, a redrawn random split
all show up), and a run received from someone else is evaluated from it — its labeller is never imported.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgcls.data.datablock import DataBundle
from imgcls.data.item_tfms import ItemTransform
from imgcls.data.items import ItemList
from imgcls.data.splits import SplitIndices
from imgcls.errors import DataError
from imgcls.spec.data import DataSpec
from imgcls.targets import EncodedTargets, Target

MANIFEST = "items.csv"
_COLUMNS = ["path", "split", "size", "mtime_ns", "target"]
_SHOWN = 5  # file names quoted per kind of change


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int


def file_state(path: Path) -> FileState | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return FileState(stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class DataChanges:
    """How the files on disk differ from a run's manifest (paths relative to the data root)."""

    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    classes_added: list[str] = field(default_factory=list)
    classes_removed: list[str] = field(default_factory=list)
    split_moved: int = 0  # items still there whose split is now the other one (a redrawn random split)

    def __bool__(self) -> bool:
        return bool(
            self.removed or self.added or self.changed or self.classes_added or self.classes_removed or self.split_moved
        )

    def lines(self) -> list[str]:
        """What changed, a line per kind of change."""

        def quoted(names: list[str]) -> str:
            more = f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
            return ", ".join(names[:_SHOWN]) + more

        found = []
        if self.classes_removed or self.classes_added:
            renamed = " (renamed?)" if len(self.classes_removed) == len(self.classes_added) else ""
            found.append(
                f"classes removed: {quoted(self.classes_removed) or '-'}; added: {quoted(self.classes_added) or '-'}"
                f"{renamed}"
            )
        for what, names in (("removed", self.removed), ("added", self.added), ("changed", self.changed)):
            if names:
                found.append(f"{len(names)} item(s) {what}: {quoted(names)}")
        if self.split_moved:
            found.append(f"{self.split_moved} item(s) would move between training and validation (a redrawn split)")
        return found


@dataclass(frozen=True)
class DataManifest:
    """The items of a run in item order: relative path, split (train | valid), file state and encoded target."""

    paths: list[str]
    splits: list[str]
    states: list[FileState]
    values: np.ndarray

    @classmethod
    def of(cls, data: DataBundle) -> DataManifest:
        """The items of both splits (items in neither are not part of the run)."""
        split = {int(i): "train" for i in data.split.train} | {int(i): "valid" for i in data.split.valid}
        order = sorted(split)
        states = []
        for index in order:
            state = file_state(data.items.paths[index])
            states.append(state if state is not None else FileState(-1, -1))
        return cls(
            [data.items.relative(i) for i in order],
            [split[i] for i in order],
            states,
            data.targets.values[np.array(order, dtype=np.int64)],
        )

    # --- the file ---------------------------------------------------------------------------------------

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_COLUMNS)
        for path, split, state, value in zip(self.paths, self.splits, self.states, self.values, strict=True):
            writer.writerow([path, split, state.size, state.mtime_ns, json.dumps(np.asarray(value).tolist())])
        return buffer.getvalue()

    def fingerprint(self) -> str:
        """sha256 of the manifest's CSV form: the record keeps it, so an edited items.csv is noticed."""
        return hashlib.sha256(self.to_csv().encode()).hexdigest()

    def write(self, folder: Path) -> Path:
        path = folder / MANIFEST
        path.write_text(self.to_csv(), encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: Path, fingerprint: str, dtype: str) -> DataManifest:
        """items.csv of a run folder, checked against the fingerprint its checkpoints hold."""
        path = folder / MANIFEST
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read {path}: {err}", hint="the run folder is incomplete; copy it again") from None
        if hashlib.sha256(text.encode()).hexdigest() != fingerprint:
            raise DataError(
                f"{path} does not match the fingerprint in the run's checkpoints (it was edited or replaced)",
                hint="restore the run folder's items.csv; the manifest is what evaluation trusts",
            )
        rows = list(csv.reader(io.StringIO(text)))
        body = rows[1:]
        values = np.array([json.loads(row[4]) for row in body], dtype=dtype)
        states = [FileState(int(row[2]), int(row[3])) for row in body]
        return cls([row[0] for row in body], [row[1] for row in body], states, values)

    # --- comparing with the disk --------------------------------------------------------------------------

    def changes(self, root: Path, current: list[str] | None = None) -> DataChanges:
        """Files of the manifest missing or changed (size or modification time) under `root`, and, when the
        current item list is given, items that are new."""
        removed, changed = [], []
        for path, state in zip(self.paths, self.states, strict=True):
            now = file_state(root / path)
            if now is None:
                removed.append(path)
            elif now != state:
                changed.append(path)
        added = sorted(set(current) - set(self.paths)) if current is not None else []
        return DataChanges(removed=removed, added=added, changed=changed)

    def compare(self, data: DataBundle, recorded: Target) -> DataChanges:
        """Everything that differs between the manifest and data built anew from the spec (resume)."""
        current = [data.items.relative(i) for i in range(len(data.items))]
        changes = self.changes(data.items.root, current)
        present, valid_now = set(current), {data.items.relative(int(i)) for i in data.split.valid}
        moved = sum(
            1
            for path, split in zip(self.paths, self.splits, strict=True)
            if path in present and (path in valid_now) != (split == "valid")
        )
        classes_added = sorted(set(data.target.vocab) - set(recorded.vocab))
        classes_removed = sorted(set(recorded.vocab) - set(data.target.vocab))
        return DataChanges(changes.removed, changes.added, changes.changed, classes_added, classes_removed, moved)

    def bundle(
        self, spec: DataSpec, root: Path, target: Target, item_tfm: ItemTransform | None, keep_missing: bool = False
    ) -> DataBundle:
        """The run's data as the manifest records it: its items, split and encoded targets, nothing re-read
        but the images. Files that are gone are left out unless `keep_missing` (they fail when read)."""
        keep = [n for n, path in enumerate(self.paths) if keep_missing or (root / path).exists()]
        if not keep:
            raise DataError(f"none of the run's {len(self.paths)} items is under {root}")
        paths = [root / self.paths[n] for n in keep]
        split = np.array([self.splits[n] == "valid" for n in keep])
        indices = SplitIndices(np.flatnonzero(~split), np.flatnonzero(split))
        values = self.values[np.array(keep, dtype=np.int64)]
        return DataBundle(spec, ItemList(root, paths), indices, EncodedTargets(target, values), item_tfm)


__all__ = ["MANIFEST", "DataChanges", "DataManifest", "FileState", "file_state"]
