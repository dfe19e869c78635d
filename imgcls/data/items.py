"""Finding items: image files under a folder, or the rows of a CSV file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from imgcls.errors import DataError
from imgcls.spec.data import CsvItems, FolderItems, Items


@dataclass(frozen=True)
class ItemList:
    """Image paths in a fixed order, with the CSV rows they came from (None for folder items)."""

    root: Path
    paths: list[Path]
    rows: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def relative(self, index: int) -> str:
        """The item's path relative to the data root, in posix form (what splits and reports show)."""
        path = self.paths[index]
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()


def _walk(root: Path, spec: FolderItems) -> list[Path]:
    extensions = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in spec.extensions}
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        # Hidden folders (.git, .ipynb_checkpoints) are never data; sorted for a machine-independent order.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if here == root and spec.folders is not None:
            dirnames[:] = [d for d in dirnames if d in spec.folders]
        if not spec.recurse and here != root:
            dirnames[:] = []
            continue
        found.extend(
            here / name
            for name in sorted(filenames)
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions
        )
    return found


def folder_items(root: Path, spec: FolderItems) -> ItemList:
    if not root.is_dir():
        raise DataError(f"data.path {root} is not a folder", hint="point data.path at the folder holding the images")
    paths = _walk(root, spec)
    if spec.folders is not None:
        missing = [f for f in spec.folders if not (root / f).is_dir()]
        if missing:
            raise DataError(f"data.items.folders: {', '.join(missing)} not found under {root}")
    if not paths:
        raise DataError(
            f"no image files under {root} with extensions {', '.join(spec.extensions)}",
            hint="check data.path, or set data.items.extensions",
        )
    return ItemList(root, sorted(paths))


def _read_csv(file: Path) -> pd.DataFrame:
    if not file.is_file():
        raise DataError(f"CSV file not found: {file}", hint="data.items.csv is relative to data.path")
    try:
        return pd.read_csv(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot parse CSV file {file}: {err}") from None


def column(frame: pd.DataFrame, key: str | int, file: str, role: str) -> pd.Series:
    """A column by name or position, with an error that lists the columns there are."""
    if isinstance(key, int):
        if not 0 <= key < frame.shape[1]:
            raise DataError(f"{role}: {file} has {frame.shape[1]} columns, no column {key}")
        return frame.iloc[:, key]
    if key not in frame.columns:
        raise DataError(
            f"{role}: {file} has no column '{key}'", hint=f"its columns: {', '.join(map(str, frame.columns))}"
        )
    return frame[key]


def csv_items(root: Path, spec: CsvItems) -> ItemList:
    frame = _read_csv(root / spec.csv)
    names = column(frame, spec.path_col, spec.csv, "data.items.path_col").astype(str)
    paths = [root / f"{spec.prefix}{name}{spec.suffix}" for name in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        examples = ", ".join(str(p) for p in missing[:3])
        raise DataError(
            f"{len(missing)} of {len(paths)} rows of {spec.csv} name files that do not exist, e.g. {examples}",
            hint="check data.items.prefix and suffix: the path is data.path / (prefix + value + suffix)",
        )
    return ItemList(root, paths, frame.reset_index(drop=True))


def collect_items(root: Path, spec: Items) -> ItemList:
    if isinstance(spec, CsvItems):
        return csv_items(root, spec)
    return folder_items(root, spec)
