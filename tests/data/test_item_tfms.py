"""Item transforms against known answers: windows, pixels and the point map."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from imgcls.data.item_tfms import RandomResizedCrop, Resize, Window, apply_window


def _marked(width: int, height: int, x: int, y: int) -> Image.Image:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[y, x] = 255
    return Image.fromarray(pixels)


def test_crop_is_centred_on_valid_and_random_on_train() -> None:
    resize = Resize((100, 100), "crop")
    assert resize.window((300, 200), None).box == (50.0, 0.0, 250.0, 200.0)
    boxes = {resize.window((300, 200), random.Random(seed)).box for seed in range(5)}
    assert len(boxes) == 5 and all(b[1] == 0 and b[3] == 200 and 0 <= b[0] <= 100 for b in boxes)


def test_pad_fits_the_whole_image_and_squish_ignores_aspect() -> None:
    pad = Resize((100, 100), "pad").window((300, 200), None)
    assert pad.box == (0.0, -50.0, 300.0, 250.0)
    assert Resize((50, 80), "squish").window((300, 200), None) == Window((0.0, 0.0, 300.0, 200.0), (80, 50))


@pytest.mark.parametrize("mode", ["zeros", "border", "reflection"])
def test_pad_modes_fill_the_margin(mode: str) -> None:
    image = Image.fromarray(np.full((20, 40, 3), 100, dtype=np.uint8))
    out = apply_window(image, Resize((40, 40), "pad", mode).window((40, 20), None), (40, 20))  # type: ignore[arg-type]
    assert out.shape == (40, 40, 3)
    assert (out[:10].max() == 0) if mode == "zeros" else (out[:10].min() == 100)
    assert out[10:30].min() == 100


def test_rrc_valid_squishes_to_size_plus_xtra_then_centre_crops() -> None:
    # fastai: 200x100 image, RandomResizedCrop(64) on valid -> squish to 80x80 (xtra 16), centre crop 64.
    window = RandomResizedCrop((64, 64)).window((200, 100), None)
    assert window.box == pytest.approx((20.0, 10.0, 180.0, 90.0))
    assert window.out == (64, 64)


def test_rrc_train_respects_min_scale_and_ratio() -> None:
    rrc = RandomResizedCrop((32, 32), min_scale=0.35, ratio=(0.75, 4 / 3))
    for seed in range(50):
        left, top, right, bottom = rrc.window((400, 300), random.Random(seed)).box
        width, height = right - left, bottom - top
        assert left >= 0 and right <= 400 and top >= 0 and bottom <= 300
        assert width * height >= 0.35 * 400 * 300 * 0.95
        assert 0.7 <= width / height <= 1.4


@pytest.mark.parametrize(
    "transform",
    [
        Resize((60, 60), "crop"),
        Resize((60, 60), "pad", "zeros"),
        Resize((30, 60), "squish"),
        RandomResizedCrop((60, 60)),
    ],
)
@pytest.mark.parametrize("train", [False, True])
def test_points_move_with_pixels(transform: Resize | RandomResizedCrop, train: bool) -> None:
    width, height, x, y = 160, 100, 70, 40
    image = _marked(width, height, x, y)
    for seed in range(5):
        window = transform.window((width, height), random.Random(seed) if train else None)
        if isinstance(transform, RandomResizedCrop) and train:
            # keep windows that contain the point (the crop may cut it out)
            left, top, right, bottom = window.box
            if not (left < x < right and top < y < bottom):
                continue
        out = apply_window(image, window, (width, height)).astype(float)[..., 0]
        point = np.array([[(x + 0.5) * 2 / width - 1, (y + 0.5) * 2 / height - 1]])
        mapped = window.map_points(point, (width, height))[0]
        out_h, out_w = out.shape
        expected = ((mapped[0] + 1) / 2 * out_w, (mapped[1] + 1) / 2 * out_h)
        rows, cols = np.mgrid[0:out_h, 0:out_w]
        weight = out / out.sum()
        found = ((weight * cols).sum() + 0.5, (weight * rows).sum() + 0.5)
        assert found == pytest.approx(expected, abs=1.0)
