"""The margin of `imgcls audit`'s near-duplicate threshold on the demo datasets (not a timing benchmark).

    PYTHONPATH=. /work/main/.venv/bin/python benchmarks/duplicate_hash_margin.py [--scale 1.0] [--every 10]

Hashes every image of the demo layouts folder, multilabel and points (generated under $IMGCLS_HOME if missing)
as the audit does (imgcls.data.audit.inspect_image), then:

- distinct: the smallest distances between two different images (every pair), and how many pairs are within
  the threshold (the false pairs; it must be 0);
- copies: every `--every`-th image is copied the ways a collection gets copies (resized, JPEG re-encoded at
  other qualities, both, re-saved as PNG) and the largest distance of each kind to its original is printed.

Both for the audit's hash (phash + dhash, 128 bits) and for phash alone, to show why one hash is not enough.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from imgcls.data.audit import NEAR_THRESHOLD, close_pairs, hash_codes, inspect_image
from imgcls.data.demo import ensure_demo
from imgcls.data.images import read_image

Copy = Callable[[Image.Image], Image.Image]


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _resize(image: Image.Image, factor: float) -> Image.Image:
    width, height = image.size
    return image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.Resampling.BILINEAR)


def _png(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


COPIES: dict[str, Copy] = {
    "resized x0.5": lambda im: _resize(im, 0.5),
    "resized x0.75": lambda im: _resize(im, 0.75),
    "resized x1.5": lambda im: _resize(im, 1.5),
    "JPEG quality 30": lambda im: _jpeg(im, 30),
    "JPEG quality 50": lambda im: _jpeg(im, 50),
    "JPEG quality 75": lambda im: _jpeg(im, 75),
    "JPEG quality 95": lambda im: _jpeg(im, 95),
    "x0.6 at quality 60": lambda im: _jpeg(_resize(im, 0.6), 60),
    "x0.4 at quality 75": lambda im: _jpeg(_resize(im, 0.4), 75),
    "re-saved as PNG": _png,
}


def _files(scale: float) -> list[Path]:
    files: list[Path] = []
    for layout in ("folder", "multilabel", "points"):
        files.extend(sorted(ensure_demo(layout, scale=scale).rglob("*.jpg")))
    return files


def _copy_distances(files: list[Path], codes: np.ndarray, every: int, scratch: Path) -> dict[str, np.ndarray]:
    found: dict[str, list[np.ndarray]] = {name: [] for name in COPIES}
    for position in range(0, len(files), every):
        image, _ = read_image(files[position])
        for number, (name, make) in enumerate(COPIES.items()):
            file = scratch / f"{number}.png"
            make(image).save(file)  # PNG: the copy's pixels exactly, as inspect_image will decode them
            copy = hash_codes([inspect_image(file, 0)])[0]
            found[name].append(
                np.array([bin(int(a ^ b)).count("1") for a, b in zip(copy, codes[position], strict=True)])
            )
    return {name: np.stack(rows) for name, rows in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="demo size (1.0: 2,900 images)")
    parser.add_argument("--every", type=int, default=10, help="copy every n-th image")
    args = parser.parse_args()
    files = _files(args.scale)
    records = [inspect_image(f, n) for n, f in enumerate(files)]
    codes = hash_codes(records)
    with tempfile.TemporaryDirectory() as scratch:
        copies = _copy_distances(files, codes, args.every, Path(scratch))
    print(f"{len(files)} demo images, {len(next(iter(copies.values())))} copied {len(COPIES)} ways each")
    for label, columns, threshold in (("phash + dhash (the audit's)", [0, 1], NEAR_THRESHOLD), ("phash alone", [0], 4)):
        chosen = np.ascontiguousarray(codes[:, columns])
        pairs, distances = close_pairs(chosen, 40 * len(columns))
        closest = np.sort(distances)[:5].tolist()
        false_pairs = int((distances <= threshold).sum())
        worst = {name: int(d[:, columns].sum(axis=1).max()) for name, d in copies.items()}
        print(f"\n{label}: {64 * len(columns)} bits, threshold {threshold}")
        print(f"  distinct images: closest pairs at {closest} bits; {false_pairs} pair(s) within the threshold")
        for name, value in worst.items():
            print(f"  copies {name:<20} at most {value:>3} bits")
        print(
            f"  margin: {min(distances, default=999) - threshold} bits below the closest distinct pair, "
            f"{threshold - max(worst.values())} bits above the farthest copy"
        )


if __name__ == "__main__":
    main()
