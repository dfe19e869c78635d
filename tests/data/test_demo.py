"""The generated demo layouts: the imbalanced one cuts one class to a tenth in training only."""

from __future__ import annotations

from imgcls.data.demo import CLASSES, MINORITY, ensure_demo


def test_imbalanced_layout_keeps_a_tenth_of_the_minority_for_training() -> None:
    root = ensure_demo("imbalanced", scale=0.1)  # 30 images per class: 24 train, 6 valid
    train = {label: len(list((root / "train" / label).glob("*.jpg"))) for label in CLASSES}
    valid = {label: len(list((root / "valid" / label).glob("*.jpg"))) for label in CLASSES}
    assert train == {label: 2 if label == MINORITY else 24 for label in CLASSES}  # numbers 1 and 2 of 0..29
    assert valid == dict.fromkeys(CLASSES, 6)
    folder = ensure_demo("folder", scale=0.1)
    kept = sorted((root / "train" / MINORITY).iterdir())
    assert [f.read_bytes() for f in kept] == [(folder / "train" / MINORITY / f.name).read_bytes() for f in kept]
