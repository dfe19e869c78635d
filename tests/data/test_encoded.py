"""The byte-reading half of data.decode: device: which files stay encoded, and that windows, targets and bad items
are those of the PIL path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgcls.data.dataset import BadItem, ImageDataset
from imgcls.data.demo import make_odd_images
from imgcls.data.encoded import EncodedCollate, EncodedDataset, EncodedItem
from imgcls.data.images import read_encoded
from imgcls.data.item_tfms import Resize
from imgcls.data.splits import SplitIndices
from imgcls.targets import TARGETS


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    files = make_odd_images(tmp_path_factory.mktemp("odd"))
    progressive = files["plain_0"].with_name("progressive.jpg")
    Image.open(files["plain_0"]).save(progressive, quality=90, progressive=True)
    files["progressive"] = progressive
    return files


DEVICE = {"plain_0", "plain_1"}
PIL_PATH = {"grey", "cmyk", "exif_rotated", "progressive", "rgba", "sixteen_bit", "palette"}


def test_only_plain_rgb_jpegs_stay_encoded(odd: dict[str, Path]) -> None:
    for name in DEVICE | PIL_PATH:
        encoded = read_encoded(odd[name])
        assert encoded.plain_jpeg == (name in DEVICE), name
        assert encoded.data == odd[name].read_bytes()
    rotated = read_encoded(odd["exif_rotated"])
    assert rotated.size == (160, 240) and rotated.info.orientation == 6  # the displayed size


def _datasets(paths: list[Path], train: bool) -> tuple[ImageDataset, EncodedDataset]:
    split = SplitIndices(np.arange(len(paths)), np.arange(len(paths)))
    points = [[10.0 + i, 20.0 + i] for i in range(len(paths))]
    targets = TARGETS.get("point").encode(points, split.train, split.valid)
    pil = ImageDataset(paths, targets, np.arange(len(paths)), Resize((48, 48), "crop"), train, seed=3)
    return pil, EncodedDataset(pil)


@pytest.mark.parametrize("train", [True, False])
def test_windows_targets_and_fallbacks_are_the_pil_paths(odd: dict[str, Path], train: bool) -> None:
    names = sorted(DEVICE | PIL_PATH)
    pil, encoded = _datasets([odd[n] for n in names], train)
    for position, name in enumerate(names):
        for epoch in (0, 1):
            item, reference = encoded[(position, epoch)], pil[(position, epoch)]
            assert not isinstance(reference, BadItem)
            if name in DEVICE:
                assert isinstance(item, EncodedItem)
                _, _, window = pil.load(position, epoch)
                assert item.window == window  # the same per-item seed, the same window
                assert np.array_equal(item.target, reference[1])  # points moved with that window
                assert item.data.tobytes() == odd[name].read_bytes()
            else:  # decoded in the worker by the PIL path itself
                assert not isinstance(item, (EncodedItem, BadItem))
                assert np.array_equal(item[0], reference[0]) and np.array_equal(item[1], reference[1])


def test_unreadable_files_are_bad_items_with_the_pil_reason(odd: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "gone.jpg"
    pil, encoded = _datasets([odd["empty"], odd["truncated"], missing], train=False)
    empty, gone = encoded[(0, 0)], encoded[(2, 0)]
    assert isinstance(empty, BadItem) and empty == pil[(0, 0)]
    assert isinstance(gone, BadItem) and gone == pil[(2, 0)]
    # A truncated JPEG's header is whole: it stays encoded, and the device decoder finds the damage.
    assert isinstance(encoded[(1, 0)], EncodedItem)


def test_collate_keeps_the_batch_order(odd: dict[str, Path]) -> None:
    names = ["grey", "plain_0", "empty", "rgba", "plain_1"]
    _, encoded = _datasets([odd[n] for n in names], train=False)
    batch = EncodedCollate(encoded.paths)([encoded[(i, 0)] for i in range(len(names))])
    assert batch.indices.tolist() == [0, 1, 3, 4]  # the empty file left out, the rest in order
    assert batch.rows.tolist() == [1, 3]  # plain_0 and plain_1 are rows 1 and 3 of the good items
    assert [f.numel() for f in batch.files()] == [odd["plain_0"].stat().st_size, odd["plain_1"].stat().st_size]
    assert batch.decoded.indices.tolist() == [0, 3] and batch.decoded.images.shape == (2, 3, 48, 48)
    assert [b.path for b in batch.decoded.bad] == [str(odd["empty"])]
    assert batch.out_size == (48, 48) and batch.targets.shape == (4, 1, 2)


def test_collate_names_two_files_of_different_sizes(odd: dict[str, Path]) -> None:
    split = SplitIndices(np.arange(2), np.arange(2))
    targets = TARGETS.get("category").encode(["a", "b"], split.train, split.valid)
    paths = [odd["plain_0"], odd["exif_rotated"]]
    encoded = EncodedDataset(ImageDataset(paths, targets, np.arange(2), None, False, seed=0))
    batch = EncodedCollate(encoded.paths)([encoded[(0, 0)], encoded[(1, 0)]])
    assert batch.decoded.error is not None and len(batch) == 0
    assert "different sizes" in batch.decoded.error and str(odd["exif_rotated"]) in batch.decoded.error
