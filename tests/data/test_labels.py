"""Each labeller on known paths."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imgcls.data.items import ItemList, collect_items
from imgcls.data.labels import label_items, load_callable
from imgcls.errors import DataError, SpecError
from imgcls.spec.data import (
    CallableLabel,
    ColumnLabel,
    CsvItems,
    FolderItems,
    ParentFolderLabel,
    PointFileLabel,
    RegexLabel,
)


def _items(*paths: str, rows: pd.DataFrame | None = None) -> ItemList:
    return ItemList(Path("/d"), [Path("/d") / p for p in paths], rows)


def test_parent_folder() -> None:
    assert label_items(_items("train/cat/1.jpg", "dog/2.png"), ParentFolderLabel(kind="parent_folder")) == [
        "cat",
        "dog",
    ]


def test_regex_on_name_like_the_pets_book_example() -> None:
    items = _items("images/great_pyrenees_173.jpg", "images/Abyssinian_1.jpg")
    spec = RegexLabel(kind="regex", pattern=r"^(.+)_\d+\.jpg$")
    assert label_items(items, spec) == ["great_pyrenees", "Abyssinian"]


def test_regex_on_path_and_failures_are_named() -> None:
    items = _items("a/cats/1.jpg", "b/dogs/2.jpg")
    assert label_items(items, RegexLabel(kind="regex", pattern=r"/(\w+)s/", source="path")) == ["cat", "dog"]
    with pytest.raises(DataError) as caught:
        label_items(_items("x_1.jpg", "nolabel.jpg"), RegexLabel(kind="regex", pattern=r"^(.+)_\d+\.jpg$"))
    assert "nolabel.jpg" in str(caught.value) and "1 of 2" in str(caught.value)


def test_csv_column_single_multi_and_regression() -> None:
    rows = pd.DataFrame({"fname": ["1", "2", "3"], "labels": ["cat dog", "", "bird"], "x": [1.5, 2, 3], "y": [0, 1, 2]})
    items = _items("1", "2", "3", rows=rows)
    assert label_items(items, ColumnLabel(kind="column", column="labels", delimiter=" ")) == [
        ["cat", "dog"],
        [],
        ["bird"],
    ]
    assert label_items(items, ColumnLabel(kind="column", column="labels")) == ["cat dog", "", "bird"]
    assert label_items(items, ColumnLabel(kind="column", column=["x", "y"])) == [[1.5, 0], [2.0, 1], [3.0, 2]]
    with pytest.raises(DataError, match="no column 'label'"):
        label_items(items, ColumnLabel(kind="column", column="label"))


def test_callable_from_module_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "mylabels.py"
    module.write_text(
        "def first_letter(path):\n    return path.name[0]\n\ndef with_row(path, row):\n    return row['tag']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    items = _items("apple.jpg", "banana.jpg", rows=pd.DataFrame({"tag": ["t1", "t2"]}))
    assert label_items(items, CallableLabel(kind="callable", function="mylabels:first_letter")) == ["a", "b"]
    assert label_items(items, CallableLabel(kind="callable", function=f"{module}:with_row")) == ["t1", "t2"]
    with pytest.raises(SpecError, match="no function 'nope'"):
        load_callable("mylabels:nope")
    with pytest.raises(SpecError, match="cannot import"):
        load_callable("no_such_module_xyz:f")
    sys.modules.pop("mylabels", None)


def test_point_file(tmp_path: Path) -> None:
    (tmp_path / "frame_1_rgb.jpg").write_bytes(b"")
    (tmp_path / "frame_1_pose.txt").write_text("10 20\n30.5 40\n")
    items = ItemList(tmp_path, [tmp_path / "frame_1_rgb.jpg"])
    spec = PointFileLabel(kind="point_file", find=r"_rgb\.jpg$", replace="_pose.txt")
    (points,) = label_items(items, spec)
    assert np.allclose(points, [[10, 20], [30.5, 40]])
    flipped = label_items(items, spec.model_copy(update={"y_first": True}))[0]
    assert np.allclose(flipped, [[20, 10], [40, 30.5]])


def test_folder_items_sorted_by_extension_skipping_hidden(tmp_path: Path) -> None:
    for name in ("b/2.JPG", "a/1.png", "a/notes.txt", ".hidden/3.jpg", "a/.4.jpg", "c/5.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    items = collect_items(tmp_path, FolderItems())
    assert [items.relative(i) for i in range(len(items))] == ["a/1.png", "b/2.JPG", "c/5.jpg"]
    only = collect_items(tmp_path, FolderItems(folders=["a", "c"]))
    assert [p.name for p in only.paths] == ["1.png", "5.jpg"]


def test_csv_items_with_prefix_suffix_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("name,label\na,cat\n")
    items = collect_items(
        tmp_path, CsvItems(kind="csv", csv="labels.csv", path_col="name", prefix="imgs/", suffix=".jpg")
    )
    assert items.paths == [tmp_path / "imgs" / "a.jpg"] and items.rows is not None
    (tmp_path / "labels.csv").write_text("name,label\na,cat\nb,dog\n")
    with pytest.raises(DataError, match="1 of 2 rows"):
        collect_items(tmp_path, CsvItems(kind="csv", csv="labels.csv", path_col="name", prefix="imgs/", suffix=".jpg"))


def test_label_transforms_merge_spellings_in_order() -> None:
    """Coat_1.jpg and coat_2.jpg share a class once lower-cased; replace pairs apply in the order written."""
    spec = RegexLabel.model_validate(
        {"kind": "regex", "pattern": r"^(.+)_\d+\.jpg$", "transforms": ["lower", {"replace": {"-": " ", "  ": " "}}]}
    )
    items = _items("Coat_1.jpg", "coat_2.jpg", "T-Shirt_3.jpg", "t--shirt_4.jpg")
    assert label_items(items, spec) == ["coat", "coat", "t shirt", "t shirt"]
    assert label_items(items, RegexLabel(kind="regex", pattern=r"^(.+)_\d+\.jpg$"))[:2] == ["Coat", "coat"]
    rows = pd.DataFrame({"f": ["1", "2"], "labels": [" Dog  cat", "BIRD "]})
    column = ColumnLabel.model_validate(
        {"kind": "column", "column": "labels", "delimiter": "  ", "transforms": ["strip", "upper"]}
    )
    assert label_items(_items("1", "2", rows=rows), column) == [["DOG", "CAT"], ["BIRD"]]
    folders = ParentFolderLabel.model_validate({"kind": "parent_folder", "transforms": [{"replace": {"n0": "wn"}}]})
    assert label_items(_items("train/n01440764/1.jpg"), folders) == ["wn1440764"]
    # the spec form survives a dump and a reload (spec.yaml of a run)
    assert RegexLabel.model_validate(spec.model_dump(mode="json")) == spec
    assert spec.model_dump(mode="json")["transforms"] == ["lower", {"replace": {"-": " ", "  ": " "}}]


def test_label_transforms_are_a_closed_set_with_clear_errors(write_spec: Callable[..., Path]) -> None:
    from imgcls.spec import load_spec

    base = {"path": "demo:folder", "labels": {"kind": "regex", "pattern": r"^(.+)_\d+\.jpg$"}}
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec({"data": {**base, "labels": {**base["labels"], "transforms": ["lowr"]}}}))
    assert "unknown value 'lowr'" in str(caught.value) and "did you mean 'lower'" in str(caught.value)
    with pytest.raises(SpecError, match="at least one 'from: to' pair"):
        load_spec(write_spec({"data": {**base, "labels": {**base["labels"], "transforms": [{"replace": {}}]}}}))
    several = {"kind": "column", "column": ["x", "y"], "transforms": ["lower"]}
    with pytest.raises(SpecError, match="transforms apply to text labels"):
        load_spec(write_spec({"data": {"path": "d", "items": {"kind": "csv", "csv": "a.csv"}, "labels": several}}))
    emptied = RegexLabel.model_validate(
        {"kind": "regex", "pattern": r"^(.+)_\d+\.jpg$", "transforms": [{"replace": {"cat": ""}}]}
    )
    with pytest.raises(DataError, match="leave 1 label\\(s\\) empty, e.g. for cat_1.jpg"):
        label_items(_items("cat_1.jpg", "dog_2.jpg"), emptied)
