"""Convert an MNIST-style IDX dataset (e.g. Debian's dataset-fashion-mnist) into an image folder imgcls reads:

    DST/train/<class>/<n>.png   (the 60,000 training images)
    DST/valid/<class>/<n>.png   (the 10,000 test images, used for validation)

Usage:
    python scripts/idx_to_folder.py /usr/share/datasets/fashion-mnist ~/.cache/imgcls/data/fashion-mnist --names fashion
then train with configs/fashion_mnist.yaml.
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = {
    "fashion": ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"],
    "digits": [str(i) for i in range(10)],
}
SPLITS = {"train": "train", "valid": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped): magic (0, 0, dtype 0x08 = uint8, n dims), big-endian sizes, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        zero, dtype, dims = struct.unpack(">HBB", handle.read(4))
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"{path} is not an unsigned-byte IDX file")
        shape = struct.unpack(f">{dims}I", handle.read(4 * dims))
        return np.frombuffer(handle.read(), dtype=np.uint8).reshape(shape)


def find(source: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (source / name).is_file():
            return source / name
    raise SystemExit(f"{stem}(.gz) not found in {source}")


def convert(source: Path, target: Path, names: list[str], per_class: dict[str, int] | None = None) -> None:
    """Every image, or the first `per_class[split]` of each class in file order (a balanced subset)."""
    for split, prefix in SPLITS.items():
        images = read_idx(find(source, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(find(source, f"{prefix}-labels-idx1-ubyte"))
        for name in names:
            (target / split / name).mkdir(parents=True, exist_ok=True)
        limit = per_class.get(split) if per_class else None
        taken = dict.fromkeys(range(len(names)), 0)
        for number, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            if limit is not None and taken[int(label)] >= limit:
                continue
            taken[int(label)] += 1
            Image.fromarray(pixels, mode="L").save(target / split / names[label] / f"{number:05d}.png")
        print(f"{split}: {sum(taken.values())} of {len(images)} images -> {target / split}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="folder with the four IDX files")
    parser.add_argument("target", type=Path, help="folder to write train/ and valid/ into")
    parser.add_argument("--names", choices=sorted(NAMES), default="digits", help="class folder names")
    parser.add_argument(
        "--per-class", metavar="TRAIN,VALID", help="only the first TRAIN and VALID images of each class, e.g. 600,100"
    )
    args = parser.parse_args()
    per_class = None
    if args.per_class:
        train, valid = (int(v) for v in args.per_class.split(","))
        per_class = {"train": train, "valid": valid}
    convert(args.source, args.target.expanduser(), NAMES[args.names], per_class)


if __name__ == "__main__":
    main()
