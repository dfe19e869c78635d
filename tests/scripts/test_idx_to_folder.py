"""scripts/idx_to_folder.py on tiny IDX files written here."""

from __future__ import annotations

import gzip
import runpy
import struct
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).parents[2] / "scripts" / "idx_to_folder.py"


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_become_class_folders(tmp_path: Path) -> None:
    source = tmp_path / "idx"
    source.mkdir()
    for prefix, count in (("train", 6), ("t10k", 3)):
        images = np.arange(count * 28 * 28).reshape(count, 28, 28) % 256
        _write_idx(source / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(source / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 2)
    module = runpy.run_path(str(SCRIPT))
    module["convert"](source, tmp_path / "out", module["NAMES"]["fashion"])
    train = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out" / "train").rglob("*.png"))
    assert train == [
        "train/t-shirt/00000.png",
        "train/t-shirt/00002.png",
        "train/t-shirt/00004.png",
        "train/trouser/00001.png",
        "train/trouser/00003.png",
        "train/trouser/00005.png",
    ]
    first = np.asarray(Image.open(tmp_path / "out" / "train" / "t-shirt" / "00000.png"))
    assert first.shape == (28, 28) and first[0, 5] == 5
    assert len(list((tmp_path / "out" / "valid").rglob("*.png"))) == 3


def test_a_balanced_subset_takes_the_first_images_of_each_class(tmp_path: Path) -> None:
    source = tmp_path / "idx"
    source.mkdir()
    for prefix, count in (("train", 8), ("t10k", 4)):
        _write_idx(source / f"{prefix}-images-idx3-ubyte.gz", np.zeros((count, 28, 28)))
        _write_idx(source / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 2)
    module = runpy.run_path(str(SCRIPT))
    module["convert"](source, tmp_path / "out", module["NAMES"]["fashion"], {"train": 2, "valid": 1})
    train = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out" / "train").rglob("*.png"))
    assert train == [
        "train/t-shirt/00000.png",
        "train/t-shirt/00002.png",
        "train/trouser/00001.png",
        "train/trouser/00003.png",
    ]
    assert sorted(p.name for p in (tmp_path / "out" / "valid").rglob("*.png")) == ["00000.png", "00001.png"]
