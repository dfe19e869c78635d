"""The demo datasets: generated on first use, deterministic, no download.

Photo-like enough to need presizing: JPEGs of 160-420 px with random aspect ratios, textured backgrounds,
and one or more coloured shapes. Layouts (`data.path: demo:<layout>`):

- folder:     folder/{train,valid}/<class>/<n>.jpg        (parent-folder labels, grandparent split)
              (5 classes x 300 images; every 5th is validation)
- imbalanced: the folder layout with 'ring' cut to 10% of the others in training (24 of 240; validation
              stays balanced, 60 per class)
- names:      names/images/<class>_<n>.jpg                 (regex labels, random split; like Oxford pets)
- csv:        csv/images/<n>.jpg + labels.csv              (fname,label,is_valid)
- multilabel: multilabel/images/<n>.jpg + labels.csv       (fname,labels,is_valid; 1-4 of 4 shapes, 800 images)
- points:     points/<group>/frame_<n>_rgb.jpg + _pts.txt  (centre of one disc, 600 images; group 06 validates)
- odd:        odd/<class>/...                              (grey, RGBA, CMYK, EXIF-rotated, 16-bit, palette,
                                                            one truncated JPEG and one empty file)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "cross", "ring", "square", "triangle")
MULTI_CLASSES = ("circle", "cross", "square", "triangle")
VERSION = "v1"
_PER_CLASS = 300
_SEED = 20261123


def imgcls_home() -> Path:
    """$IMGCLS_HOME, else ~/.cache/imgcls: generated demo data and downloaded datasets live here."""
    return Path(os.environ.get("IMGCLS_HOME", Path.home() / ".cache" / "imgcls"))


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A colour gradient with low-frequency blotches and sensor-like noise, HWC float in [0, 255]."""
    base = rng.uniform(40, 215, size=3).astype(np.float32)
    tilt = rng.uniform(-60, 60, size=(2, 3)).astype(np.float32)
    u = (np.arange(width, dtype=np.float32) / width - 0.5)[None, :, None]
    v = (np.arange(height, dtype=np.float32) / height - 0.5)[:, None, None]
    coarse = rng.normal(128, 18, size=(max(height // 32, 2), max(width // 32, 2), 3))
    blotches = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    image = np.asarray(blotches, dtype=np.float32) + (base - 128) + u * tilt[0] + v * tilt[1]
    image += rng.standard_normal(size=(height, width, 3), dtype=np.float32) * 6
    clipped: np.ndarray = np.clip(image, 0, 255)
    return clipped


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    centre: tuple[float, float],
    radius: float,
    colour: tuple[int, int, int],
    angle: float,
) -> None:
    x, y = centre
    if shape == "circle":
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    elif shape == "ring":
        width = max(int(radius * 0.35), 2)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=colour, width=width)
    elif shape == "square":
        draw.regular_polygon((x, y, radius), 4, rotation=angle, fill=colour)
    elif shape == "triangle":
        draw.regular_polygon((x, y, radius), 3, rotation=angle, fill=colour)
    else:  # cross: two bars
        bar = radius * 0.32
        for horizontal in (True, False):
            box = (
                (x - radius, y - bar, x + radius, y + bar) if horizontal else (x - bar, y - radius, x + bar, y + radius)
            )
            draw.rectangle(box, fill=colour)


def _contrasting(rng: np.random.Generator, background: np.ndarray, centre: tuple[float, float]) -> tuple[int, int, int]:
    """A saturated colour far from the background under the shape."""
    row, col = int(centre[1]), int(centre[0])
    under = background[min(row, background.shape[0] - 1), min(col, background.shape[1] - 1)]
    for _ in range(20):
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - under).sum() > 180:
            break
    return (int(colour[0]), int(colour[1]), int(colour[2]))


def render(
    rng: np.random.Generator,
    shapes: list[str],
    centres: list[tuple[float, float]] | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[Image.Image, list[tuple[float, float]]]:
    """One image with `shapes` drawn at random places (or `centres`); returns it and the centres used."""
    width, height = size or (int(rng.integers(160, 421)), 0)
    if height == 0:
        height = int(np.clip(width / rng.uniform(0.6, 1.6), 120, 480))
    background = _background(rng, width, height)
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    radius = short * (rng.uniform(0.22, 0.32) if len(shapes) == 1 else rng.uniform(0.12, 0.17))
    used: list[tuple[float, float]] = []
    for index, shape in enumerate(shapes):
        if centres is not None:
            centre = centres[index]
        elif len(shapes) == 1:
            # Keep a single shape near the middle so a centre crop of a long image still shows most of it.
            centre = (width / 2 + rng.uniform(-0.2, 0.2) * short, height / 2 + rng.uniform(-0.2, 0.2) * short)
        else:
            # Several shapes: one per quadrant, so they never overlap.
            qx, qy = index % 2, (index // 2) % 2
            centre = (
                width * (0.25 + 0.5 * qx) + rng.uniform(-0.05, 0.05) * width,
                height * (0.25 + 0.5 * qy) + rng.uniform(-0.05, 0.05) * height,
            )
        _draw_shape(draw, shape, centre, radius, _contrasting(rng, background, centre), float(rng.uniform(0, 90)))
        used.append(centre)
    return image, used


def _count(full: int, scale: float) -> int:
    return max(5, round(full * scale))


def _class_images(
    root: Path,
    scale: float,
    place: Callable[[str, int, bool], Path],
    keep: Callable[[str, int, bool], bool] | None = None,
) -> list[tuple[Path, str, bool]]:
    """Render _PER_CLASS * scale images per class (those `keep` accepts); every 5th is validation. Returns
    (file, label, is_valid)."""
    written = []
    for class_index, label in enumerate(CLASSES):
        for number in range(_count(_PER_CLASS, scale)):
            is_valid = number % 5 == 0
            if keep is not None and not keep(label, number, is_valid):
                continue
            rng = np.random.default_rng([_SEED, class_index, number])
            image, _ = render(rng, [label])
            file = root / place(label, number, is_valid)
            file.parent.mkdir(parents=True, exist_ok=True)
            image.save(file, quality=90)
            written.append((file, label, is_valid))
    return written


def _folder(root: Path, scale: float) -> None:
    _class_images(root, scale, lambda label, n, valid: Path("valid" if valid else "train") / label / f"{n:03d}.jpg")


MINORITY = "ring"


def _imbalanced(root: Path, scale: float) -> None:
    # The first tenth of the numbers holds a tenth of the training items (4 in every 5 numbers train).
    cutoff = 0.1 * _count(_PER_CLASS, scale)
    _class_images(
        root,
        scale,
        lambda label, n, valid: Path("valid" if valid else "train") / label / f"{n:03d}.jpg",
        keep=lambda label, n, valid: valid or label != MINORITY or n < cutoff,
    )


def _names(root: Path, scale: float) -> None:
    _class_images(root, scale, lambda label, n, valid: Path("images") / f"{label}_{n}.jpg")


def _csv(root: Path, scale: float) -> None:
    rows = _class_images(root, scale, lambda label, n, valid: Path("images") / f"{label[:2]}{n:03d}.jpg")
    lines = ["fname,label,is_valid"] + [f"{f.name},{label},{valid}" for f, label, valid in rows]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def _multilabel(root: Path, scale: float) -> None:
    lines = ["fname,labels,is_valid"]
    for number in range(_count(800, scale)):
        rng = np.random.default_rng([_SEED, 100, number])
        count = int(rng.integers(1, 5))
        shapes = sorted(rng.choice(MULTI_CLASSES, size=count, replace=False).tolist())
        order = rng.permutation(count)
        image, _ = render(rng, [shapes[i] for i in order])
        (root / "images").mkdir(parents=True, exist_ok=True)
        image.save(root / "images" / f"{number:04d}.jpg", quality=90)
        lines.append(f"{number:04d}.jpg,{' '.join(shapes)},{number % 5 == 0}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def _points(root: Path, scale: float) -> None:
    for number in range(_count(600, scale)):
        rng = np.random.default_rng([_SEED, 200, number])
        width, height = int(rng.integers(200, 321)), int(rng.integers(150, 241))
        radius = min(width, height) * 0.12
        centre = (float(rng.uniform(radius, width - radius)), float(rng.uniform(radius, height - radius)))
        image, _ = render(rng, ["circle"], centres=[centre], size=(width, height))
        folder = root / f"{number % 6 + 1:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"frame_{number:04d}_rgb.jpg", quality=90)
        (folder / f"frame_{number:04d}_pts.txt").write_text(f"{centre[0]:.3f} {centre[1]:.3f}\n")


def make_odd_images(root: Path, scale: float = 1.0) -> dict[str, Path]:
    """A folder of awkward real-world files under root/<class>/; returns them by what is odd about them."""
    rng = np.random.default_rng([_SEED, 300])
    files: dict[str, Path] = {}

    def save(name: str, label: str, image: Image.Image, **kwargs: object) -> None:
        path = root / label / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **kwargs)  # type: ignore[arg-type]
        files[name.split(".", maxsplit=1)[0]] = path

    for number, label in enumerate(("circle", "square", "circle", "square")):
        save(f"plain_{number}.jpg", label, render(rng, [label])[0], quality=90)
    save("grey.jpg", "circle", render(rng, ["circle"])[0].convert("L"), quality=90)
    rgba = render(rng, ["square"])[0].convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 128))
    save("rgba.png", "square", rgba)
    save("cmyk.jpg", "circle", render(rng, ["circle"])[0].convert("CMYK"), quality=90)
    rotated, _ = render(rng, ["square"], size=(240, 160))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait (rotate 90 degrees clockwise)
    save("exif_rotated.jpg", "square", rotated, quality=90, exif=exif.tobytes())
    grey16 = np.asarray(render(rng, ["circle"])[0].convert("L"), dtype=np.uint16) * 257
    save("sixteen_bit.png", "circle", Image.fromarray(grey16))
    save("palette.png", "square", render(rng, ["square"])[0].convert("P", palette=Image.Palette.ADAPTIVE))
    truncated = root / "circle" / "truncated.jpg"
    save("truncated.jpg", "circle", render(rng, ["circle"])[0], quality=90)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    empty = root / "square" / "empty.jpg"
    empty.write_bytes(b"")
    files["empty"] = empty
    return files


LAYOUTS: dict[str, Callable[[Path, float], object]] = {
    "folder": _folder,
    "imbalanced": _imbalanced,
    "names": _names,
    "csv": _csv,
    "multilabel": _multilabel,
    "points": _points,
    "odd": make_odd_images,
}


def ensure_demo(layout: str, home: Path | None = None, scale: float = 1.0, generate: bool = True) -> Path:
    """The folder of a demo layout, generated (atomically: a temp folder renamed into place) if missing.

    `scale` < 1 generates fewer images (tests use tiny versions); it is part of the folder name. Without
    `generate` a missing folder is an error (evaluating a run never writes data).
    """
    from imgcls.errors import SpecError
    from imgcls.registry import did_you_mean

    if layout not in LAYOUTS:
        raise SpecError(
            f"unknown demo layout '{layout}'{did_you_mean(layout, list(LAYOUTS))}",
            hint=f"use data.path: demo:<layout> with one of {', '.join(LAYOUTS)}",
        )
    suffix = "" if scale == 1.0 else f"-x{scale:g}"
    target = (home or imgcls_home()) / "datasets" / f"demo-{VERSION}" / f"{layout}{suffix}"
    if target.is_dir():
        return target
    if not generate:
        from imgcls.errors import DataError

        raise DataError(
            f"the demo dataset {target} does not exist",
            hint=f"generate it first: imgcls summary on a spec with data.path: demo:{layout}",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{layout}-", dir=target.parent))
    try:
        LAYOUTS[layout](scratch, scale)
        scratch.chmod(0o755)  # mkdtemp makes it private
        os.replace(scratch, target)
    except OSError:
        # Another process (a second torchrun rank) finished first: use its copy.
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
