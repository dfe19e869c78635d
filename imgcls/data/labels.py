"""Labelling items: parent folder, regex, CSV column, point file or any Python callable."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgcls.data.items import ItemList, column
from imgcls.errors import DataError, SpecError
from imgcls.spec.data import (
    CallableLabel,
    ColumnLabel,
    Labels,
    LabelTransform,
    ParentFolderLabel,
    PointFileLabel,
    RegexLabel,
    ReplaceTransform,
)

RawLabel = Any  # str (category), list[str] (multi), list[float] (regression), array (n, 2) (points)


def load_callable(reference: str) -> Callable[..., Any]:
    """`package.module:function`, or `path/to/file.py:function` (relative to the working directory)."""
    module_name, _, attr = reference.rpartition(":")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name).resolve()
            spec = importlib.util.spec_from_file_location(f"imgcls_user_{file.stem}", file)
            if spec is None or spec.loader is None or not file.is_file():
                raise FileNotFoundError(str(file))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except (ImportError, FileNotFoundError) as err:
        raise SpecError(
            f"cannot import '{module_name}' for '{reference}': {err}",
            hint="the module must be importable (on PYTHONPATH) or be a .py file path",
        ) from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise SpecError(f"'{module_name}' has no function '{attr}' (from '{reference}')")
    return function  # type: ignore[no-any-return]


def _regex_labels(items: ItemList, spec: RegexLabel) -> list[RawLabel]:
    pattern = re.compile(spec.pattern)
    labels: list[RawLabel] = []
    failures: list[str] = []
    for path in items.paths:
        text = path.name if spec.source == "name" else path.as_posix()
        found = pattern.search(text)
        if found is None or found.group(1) is None:
            failures.append(text)
        else:
            labels.append(found.group(1))
    if failures:
        raise DataError(
            f"data.labels.pattern '{spec.pattern}' does not match {len(failures)} of {len(items)} "
            f"{'file names' if spec.source == 'name' else 'paths'}, e.g. {', '.join(failures[:3])}",
            hint="test the pattern on those names; `source: path` matches the whole path instead of the name",
        )
    return labels


def _column_labels(items: ItemList, spec: ColumnLabel) -> list[RawLabel]:
    assert items.rows is not None
    keys = spec.column if isinstance(spec.column, list) else [spec.column]
    columns = [column(items.rows, key, "the CSV file", "data.labels.column") for key in keys]
    if len(columns) > 1:
        return [list(values) for values in zip(*columns, strict=True)]
    values = columns[0]
    if spec.delimiter is None:
        return list(values)
    # Empty cells (NaN) become no labels, as fastai's ColReader gives [] for an empty string.
    return [[] if pd.isna(v) or str(v) == "" else str(v).split(spec.delimiter) for v in values]


def _point_file(path: Path, spec: PointFileLabel) -> np.ndarray:
    target = path.with_name(re.sub(spec.find, spec.replace, path.name))
    try:
        values = np.array(target.read_text().split(), dtype=np.float32)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read points for {path} from {target}: {err}") from None
    if values.size == 0 or values.size % 2:
        raise DataError(f"{target} holds {values.size} numbers; points need x y pairs")
    points = values.reshape(-1, 2)
    return points[:, ::-1].copy() if spec.y_first else points


def _callable_labels(items: ItemList, spec: CallableLabel) -> list[RawLabel]:
    function = load_callable(spec.function)
    takes_row = len(inspect.signature(function).parameters) >= 2
    labels: list[RawLabel] = []
    for index, path in enumerate(items.paths):
        try:
            if takes_row and items.rows is not None:
                labels.append(function(path, items.rows.iloc[index]))
            else:
                labels.append(function(path))
        except Exception as err:
            raise DataError(f"{spec.function} failed on {path}: {type(err).__name__}: {err}") from err
    return labels


def transform_label(text: str, transforms: Sequence[LabelTransform]) -> str:
    """One label through the spec's transforms, in order."""
    for transform in transforms:
        if isinstance(transform, ReplaceTransform):
            for old, new in transform.replace.items():
                text = text.replace(old, new)
        elif transform.kind == "lower":
            text = text.lower()
        elif transform.kind == "upper":
            text = text.upper()
        else:
            text = text.strip()
    return text


def _transformed(items: ItemList, labels: list[RawLabel], transforms: Sequence[LabelTransform]) -> list[RawLabel]:
    """Every text label (each of a multi-label list) through `transforms`; a label they leave empty is an error."""
    out: list[RawLabel] = []
    emptied: list[str] = []
    for index, label in enumerate(labels):
        if isinstance(label, list):
            done: RawLabel = [transform_label(str(part), transforms) for part in label]
            empty = any(new == "" and str(old) != "" for old, new in zip(label, done, strict=True))
        elif label is None or (isinstance(label, float) and pd.isna(label)):
            done, empty = label, False  # an empty CSV cell stays empty: the target block reports it
        else:
            done = transform_label(str(label), transforms)
            empty = done == "" and str(label) != ""
        if empty:
            emptied.append(items.relative(index))
        out.append(done)
    if emptied:
        raise DataError(
            f"data.labels.transforms leave {len(emptied)} label(s) empty, e.g. for {', '.join(emptied[:3])}",
            hint="check the replace pairs and the labels they apply to (`imgcls summary` shows one label)",
        )
    return out


def label_items(items: ItemList, spec: Labels) -> list[RawLabel]:
    """One raw label per item, through the spec's label transforms (regex, column and parent_folder labels)."""
    labels: list[RawLabel]
    if isinstance(spec, ParentFolderLabel):
        labels = [path.parent.name for path in items.paths]
    elif isinstance(spec, RegexLabel):
        labels = _regex_labels(items, spec)
    elif isinstance(spec, ColumnLabel):
        labels = _column_labels(items, spec)
    elif isinstance(spec, PointFileLabel):
        return [_point_file(path, spec) for path in items.paths]
    else:
        return _callable_labels(items, spec)
    return _transformed(items, labels, spec.transforms) if spec.transforms else labels


__all__ = ["label_items", "load_callable", "transform_label"]
