"""Each splitter against exact sizes and membership."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from imgcls.data.items import ItemList
from imgcls.data.splits import random_split, split_items
from imgcls.errors import DataError
from imgcls.spec.data import ColumnSplit, FileSplit, FolderNameSplit, GrandparentSplit, PathRegexSplit, RandomSplit


def _items(paths: list[str], rows: pd.DataFrame | None = None) -> ItemList:
    root = Path("/data")
    return ItemList(root, [root / p for p in paths], rows)


def test_random_split_sizes_are_exact_and_reproducible() -> None:
    for n, pct in ((10, 0.2), (101, 0.2), (7, 0.5), (1000, 0.15)):
        split = random_split(n, pct, seed=3)
        assert len(split.valid) == int(pct * n)
        assert len(split.train) == n - int(pct * n)
        assert sorted(np.concatenate([split.train, split.valid]).tolist()) == list(range(n))
        again = random_split(n, pct, seed=3)
        assert np.array_equal(split.valid, again.valid)


def test_random_split_matches_fastai_permutation_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    split = random_split(20, 0.25, seed=42)
    assert torch.equal(torch.get_rng_state(), before)
    # fastai: torch.manual_seed(seed); randperm(n); valid = perm[:cut]
    expected = torch.randperm(20, generator=torch.Generator().manual_seed(42))[:5].sort().values.numpy()
    assert np.array_equal(split.valid, expected)
    assert not np.array_equal(split.valid, random_split(20, 0.25, seed=43).valid)


def test_grandparent_split_drops_items_under_neither() -> None:
    items = _items(["train/a/1.jpg", "train/b/2.jpg", "valid/a/3.jpg", "test/a/4.jpg", "valid/b/5.jpg"])
    split = split_items(items, GrandparentSplit(kind="grandparent"))
    assert split.train.tolist() == [0, 1] and split.valid.tolist() == [2, 4]
    custom = split_items(items, GrandparentSplit(kind="grandparent", train=["train", "test"], valid="valid"))
    assert custom.train.tolist() == [0, 1, 3]


def test_folder_name_split_like_biwi_person_13() -> None:
    items = _items(["01/f1.jpg", "13/f2.jpg", "02/f3.jpg", "13/f4.jpg"])
    split = split_items(items, FolderNameSplit(kind="folder_name", valid="13"))
    assert split.valid.tolist() == [1, 3] and split.train.tolist() == [0, 2]


def test_folder_name_split_names_the_folders_that_exist() -> None:
    items = _items(["01/f1.jpg", "13/f2.jpg", "02/f3.jpg"])
    with pytest.raises(DataError) as caught:
        split_items(items, FolderNameSplit(kind="folder_name", valid=["13", "31"]))
    assert "no image is in a folder named '31'" in caught.value.message
    assert "the images' folders are named: 01, 02, 13" in caught.value.message
    assert caught.value.hint is not None and "folder names" in caught.value.hint


def test_path_regex_split() -> None:
    items = _items(["a/x_1.jpg", "a/x_2.jpg", "b/y_1.jpg"])
    split = split_items(items, PathRegexSplit(kind="path_regex", pattern=r"^b/"))
    assert split.valid.tolist() == [2]


def test_column_split_reads_booleans_and_strings() -> None:
    rows = pd.DataFrame({"fname": ["1", "2", "3", "4"], "is_valid": [True, False, True, False]})
    split = split_items(_items(["1", "2", "3", "4"], rows), ColumnSplit(kind="column"))
    assert split.valid.tolist() == [0, 2]
    text = pd.DataFrame({"fname": ["1", "2", "3"], "is_valid": ["yes", "no", "1"]})
    assert split_items(_items(["1", "2", "3"], text), ColumnSplit(kind="column")).valid.tolist() == [0, 2]
    odd = pd.DataFrame({"fname": ["1", "2"], "is_valid": ["maybe", "no"]})
    with pytest.raises(DataError, match="not booleans"):
        split_items(_items(["1", "2"], odd), ColumnSplit(kind="column"))


def test_file_split(tmp_path: Path) -> None:
    (tmp_path / "valid.txt").write_text("# validation items\na/2.jpg\n3.jpg\n")
    items = ItemList(tmp_path, [tmp_path / p for p in ("a/1.jpg", "a/2.jpg", "b/3.jpg")])
    split = split_items(items, FileSplit(kind="file", file="valid.txt"))
    assert split.valid.tolist() == [1, 2] and split.train.tolist() == [0]
    (tmp_path / "bad.txt").write_text("a/9.jpg\n")
    with pytest.raises(DataError, match="match no item"):
        split_items(items, FileSplit(kind="file", file="bad.txt"))


def test_empty_set_is_an_error() -> None:
    with pytest.raises(DataError, match="validation set empty"):
        split_items(_items(["train/a/1.jpg"]), GrandparentSplit(kind="grandparent"))
    with pytest.raises(DataError, match="validation set empty"):
        split_items(_items(["a.jpg", "b.jpg"]), RandomSplit(valid_pct=0.2))
