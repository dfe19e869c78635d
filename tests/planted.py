"""Generated datasets with planted faults for the audit tests: what is planted is what the audit must find.

`planted_folder` builds root/{train,valid}/{circle,square}/ of distinct demo-generator images, then adds:

- exact duplicates: a byte copy (train), a re-save as PNG of the decoded JPEG (train: same pixels, other bytes),
  and a byte copy of a training image in the validation folder of the OTHER class (leakage, conflicting labels);
- near duplicates: a resized copy and a JPEG re-encode at quality 40 (train), and a resized copy re-saved as PNG
  in the validation folder (leakage).

`broken_folder` is make_odd_images plus text saved as a JPEG and random bytes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from imgcls.data.demo import make_odd_images, render
from imgcls.data.images import read_image

CLASSES = ("circle", "square")
TRAIN_PER_CLASS, VALID_PER_CLASS = 10, 4
DISTINCT = len(CLASSES) * (TRAIN_PER_CLASS + VALID_PER_CLASS)

# The planted numbers (see the module docstring).
EXPECTED = {
    "items": DISTINCT + 6,
    "train": len(CLASSES) * TRAIN_PER_CLASS + 4,
    "valid": len(CLASSES) * VALID_PER_CLASS + 2,
    "unreadable": 0,
    "exact_duplicate_groups": 3,
    "exact_duplicate_items": 6,
    "exact_duplicate_extra_copies": 3,
    "near_duplicate_groups": 3,
    "near_duplicate_items": 6,
    "leakage_groups": 2,
    "leaked_valid_items": 2,
    "leaked_valid_items_exact": 1,
    "leaked_valid_items_near_only": 1,
    "conflicting_label_groups": 1,
}


def distinct_images(root: Path, seed: int = 5) -> list[Path]:
    """root/{train,valid}/<class>/<nn>.jpg, every image drawn from its own generator."""
    written = []
    for class_number, label in enumerate(CLASSES):
        for number in range(TRAIN_PER_CLASS + VALID_PER_CLASS):
            split = "train" if number < TRAIN_PER_CLASS else "valid"
            image, _ = render(np.random.default_rng([seed, class_number, number]), [label])
            path = root / split / label / f"{number:02d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, quality=90)
            written.append(path)
    return written


def _decoded(path: Path) -> Image.Image:
    return read_image(path)[0]


def _resized(path: Path, factor: float) -> Image.Image:
    image = _decoded(path)
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.BILINEAR)


def planted_folder(root: Path) -> Path:
    distinct_images(root)
    train = root / "train"
    shutil.copyfile(train / "circle" / "00.jpg", train / "circle" / "t_copy.jpg")
    _decoded(train / "square" / "00.jpg").save(train / "square" / "t_png.png")
    _resized(train / "circle" / "01.jpg", 0.6).save(train / "circle" / "t_resized.jpg", quality=90)
    _decoded(train / "square" / "01.jpg").save(train / "square" / "t_quality40.jpg", quality=40)
    shutil.copyfile(train / "circle" / "02.jpg", root / "valid" / "square" / "v_copy.jpg")
    _resized(train / "square" / "02.jpg", 0.75).save(root / "valid" / "square" / "v_resized.png")
    return root


def broken_folder(root: Path) -> dict[str, Path]:
    """make_odd_images' files under root/<class>/, and two more files that are not images at all."""
    files = make_odd_images(root)
    files["text"] = root / "circle" / "text.jpg"
    files["text"].write_text("this is a note, not a JPEG\n")
    files["random"] = root / "square" / "random.jpg"
    files["random"].write_bytes(np.random.default_rng(3).integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    return files
