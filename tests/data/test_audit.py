"""The data audit finds exactly what was planted: duplicates, leakage, unreadable files, modes, class counts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from planted import EXPECTED, broken_folder, distinct_images, planted_folder

from imgcls.data.audit import (
    NEAR_THRESHOLD,
    DataAudit,
    audit_data,
    close_pairs,
    example_pairs,
    near_components,
    scan_images,
)
from imgcls.data.datablock import DataBundle, build_data
from imgcls.spec.load import spec_from_dict


def _data(path: Path | str, **data: Any) -> DataBundle:
    spec = {"data": {"path": str(path), **data}, "train": {"stages": [{"schedule": "fit_one_cycle"}]}}
    return build_data(spec_from_dict(spec).data)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> DataAudit:
    root = planted_folder(tmp_path_factory.mktemp("planted"))
    return audit_data(_data(root, split={"kind": "grandparent"}))


def _paths(audit: DataAudit, members: tuple[int, ...]) -> list[str]:
    return [audit.items[m].path for m in members]


def test_planted_counts(planted: DataAudit) -> None:
    counts = planted.counts()
    assert {key: counts[key] for key in EXPECTED} == EXPECTED
    assert planted.findings(max_imbalance=3.0) == ["leakage", "duplicates"]


def test_exact_duplicates_are_the_same_pixels_not_bytes(planted: DataAudit) -> None:
    groups = [_paths(planted, g.members) for g in planted.exact]
    assert groups == [
        ["train/circle/00.jpg", "train/circle/t_copy.jpg"],  # a byte copy
        ["train/circle/02.jpg", "valid/square/v_copy.jpg"],  # a byte copy in the other split and class
        ["train/square/00.jpg", "train/square/t_png.png"],  # the decoded JPEG re-saved as PNG: other bytes
    ]
    assert all(g.distances == (0, 0) for g in planted.exact)


def test_near_duplicates_resized_and_reencoded(planted: DataAudit) -> None:
    groups = [_paths(planted, g.members) for g in planted.near]
    assert groups == [
        ["train/circle/01.jpg", "train/circle/t_resized.jpg"],  # x0.6
        ["train/square/01.jpg", "train/square/t_quality40.jpg"],  # JPEG quality 90 -> 40
        ["train/square/02.jpg", "valid/square/v_resized.png"],  # x0.75, saved as PNG
    ]
    assert all(max(g.distances) <= NEAR_THRESHOLD for g in planted.near)


def test_leakage_is_the_groups_across_splits(planted: DataAudit) -> None:
    leaks = [(g.kind, _paths(planted, g.members)) for g in planted.leakage]
    assert leaks == [
        ("exact", ["train/circle/02.jpg", "valid/square/v_copy.jpg"]),
        ("near", ["train/square/02.jpg", "valid/square/v_resized.png"]),
    ]
    leaked, exact = planted.leaked_valid()
    assert _paths(planted, tuple(sorted(leaked))) == ["valid/square/v_copy.jpg", "valid/square/v_resized.png"]
    assert _paths(planted, tuple(exact)) == ["valid/square/v_copy.jpg"]
    # The copy filed under another class is also a label conflict.
    assert [_paths(planted, g.members) for g in planted.conflicting_labels()] == [
        ["train/circle/02.jpg", "valid/square/v_copy.jpg"]
    ]


def test_example_pairs_show_leaks_first(planted: DataAudit) -> None:
    pairs = example_pairs(planted, 4)
    kinds = [(p.group.kind, p.leaks) for p in pairs]
    assert kinds == [("exact", True), ("near", True), ("near", False), ("near", False)]
    first = pairs[0]
    assert {planted.items[first.first].split, planted.items[first.second].split} == {"train", "valid"}


def test_no_false_pairs_among_distinct_demo_images() -> None:
    # 150 images of the demo generator: shapes on textured backgrounds, many with the same layout.
    audit = audit_data(_data("demo:folder@0.1", split={"kind": "grandparent"}))
    assert len(audit.items) == 150
    assert (audit.exact, audit.near, audit.leakage) == ([], [], [])


def test_no_false_pairs_among_distinct_planted_images(tmp_path: Path) -> None:
    distinct_images(tmp_path)
    audit = audit_data(_data(tmp_path, split={"kind": "grandparent"}))
    assert audit.counts()["items"] == 28
    assert (audit.exact, audit.near) == ([], [])


def test_broken_and_odd_files(tmp_path: Path) -> None:
    files = broken_folder(tmp_path)
    audit = audit_data(_data(tmp_path, split={"kind": "random", "valid_pct": 0.25, "seed": 1}))
    reasons = {audit.items[r.index].path: r.error for r in audit.unreadable()}
    assert set(reasons) == {"circle/truncated.jpg", "square/empty.jpg", "circle/text.jpg", "square/random.jpg"}
    assert reasons["circle/truncated.jpg"].startswith("the file is truncated")
    assert reasons["square/empty.jpg"] == "the file is empty (0 bytes)"
    assert reasons["circle/text.jpg"] == reasons["square/random.jpg"] == "not an image format Pillow can read"
    # Odd but readable: the mode as stored, before the conversion to RGB.
    assert audit.modes() == {"RGB": 5, "CMYK": 1, "L": 1, "I;16": 1, "P": 1, "RGBA": 1}
    by_path = {audit.items[i].path: r for i, r in audit.records.items()}
    rotated = by_path[files["exif_rotated"].relative_to(tmp_path).as_posix()]
    assert (rotated.orientation, rotated.width, rotated.height) == (6, 160, 240)  # the displayed size
    assert audit.rotated() == 1
    assert audit.findings(3.0) == ["unreadable"]


def test_class_counts_and_imbalance(image_folder: Callable[..., Path]) -> None:
    root = image_folder({"a": 6, "b": 2}, size=(40, 24))
    audit = audit_data(_data(root, split={"kind": "grandparent"}))
    assert audit.class_counts is not None
    assert audit.class_counts.train == {"a": 6, "b": 2} and audit.class_counts.valid == {"a": 6, "b": 2}
    assert audit.class_counts.imbalance == 3.0
    assert "imbalance" in audit.findings(max_imbalance=2.0) and "imbalance" not in audit.findings(3.0)
    # 24 px high: every image is tiny.
    assert audit.sizes().tiny == 16 and audit.sizes().height.median == 24


def test_multilabel_counts_and_labels() -> None:
    data = _data(
        "demo:multilabel@0.05",
        blocks=["image", "multi_category"],
        items={"kind": "csv", "csv": "labels.csv", "path_col": "fname", "prefix": "images/"},
        labels={"kind": "column", "column": "labels", "delimiter": " "},
        split={"kind": "column", "column": "is_valid"},
    )
    audit = audit_data(data)
    assert audit.class_counts is not None and audit.class_counts.train == data.class_counts(True)
    first = audit.items[0]
    assert first.path == "images/0000.jpg"
    assert first.label == " ".join(v for v, on in zip(data.target.vocab, data.targets.values[0], strict=True) if on)
    assert audit.class_counts.imbalance == max(audit.class_counts.train.values()) / min(
        audit.class_counts.train.values()
    )


def test_point_targets_have_no_class_counts() -> None:
    data = _data(
        "demo:points@0.02",
        blocks=["image", "point"],
        labels={"kind": "point_file", "find": r"_rgb\.jpg$", "replace": "_pts.txt"},
        split={"kind": "folder_name", "valid": ["06"]},
    )
    audit = audit_data(data)
    assert audit.class_counts is None and "imbalance" not in audit.findings(1.0)
    assert len(audit.items[0].label.split()) == 2  # x y as numbers


def test_close_pairs_in_blocks_equal_brute_force() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2**63, size=(300, 2), dtype=np.uint64)
    # Plant near copies: flip 1..12 random bits of some rows.
    for row in range(0, 300, 7):
        target = (row * 13 + 5) % 300
        codes[target] = codes[row]
        for bit in rng.choice(128, size=int(rng.integers(1, 13)), replace=False):
            codes[target, bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    pairs, distances = close_pairs(codes, 10, budget=1000)  # blocks of 3 rows: 100 blocks
    brute = {
        (i, j): d
        for i in range(300)
        for j in range(i + 1, 300)
        if (d := sum(bin(int(a) ^ int(b)).count("1") for a, b in zip(codes[i], codes[j], strict=True))) <= 10
    }
    assert dict(zip(map(tuple, pairs.tolist()), distances.tolist(), strict=True)) == brute
    assert len(brute) > 20


def test_identical_hashes_collapse_into_one_component() -> None:
    rng = np.random.default_rng(1)
    codes = np.concatenate([np.zeros((5000, 2), dtype=np.uint64), rng.integers(0, 2**63, (10, 2), dtype=np.uint64)])
    component = near_components(codes, NEAR_THRESHOLD)
    assert len(set(component[:5000].tolist())) == 1 and len(set(component.tolist())) == 11


def test_workers_give_the_same_records(tmp_path: Path) -> None:
    paths = distinct_images(tmp_path)[:12]
    indices = list(range(100, 112))
    assert scan_images(paths, indices, workers=2) == scan_images(paths, indices, workers=0)
