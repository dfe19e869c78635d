"""Decoding odd real-world files: every one becomes 8-bit RGB, or fails with its name and reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgcls.data.demo import make_odd_images
from imgcls.data.images import read_image
from imgcls.errors import ImageReadError


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_odd_images(tmp_path_factory.mktemp("odd"))


@pytest.mark.parametrize("name", ["grey", "rgba", "cmyk", "sixteen_bit", "palette", "plain_0"])
def test_modes_become_rgb(odd: dict[str, Path], name: str) -> None:
    image, size = read_image(odd[name])
    assert image.mode == "RGB" and image.size == size


def test_sixteen_bit_is_scaled_not_clipped(odd: dict[str, Path]) -> None:
    image, _ = read_image(odd["sixteen_bit"])
    original = np.asarray(Image.open(odd["sixteen_bit"]), dtype=np.int64)
    pixels = np.asarray(image)[..., 0].astype(np.int64)
    # PIL's own convert clips everything above 255 to white; scaling keeps the picture.
    assert pixels.std() > 10
    assert np.abs(pixels - original * 255 // 65535).max() <= 1


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)  # black, fully transparent
    Image.fromarray(pixels, "RGBA").save(tmp_path / "clear.png")
    image, _ = read_image(tmp_path / "clear.png")
    assert np.asarray(image).min() == 255


def test_exif_orientation_is_applied(odd: dict[str, Path]) -> None:
    stored = Image.open(odd["exif_rotated"]).size
    image, size = read_image(odd["exif_rotated"])
    assert stored == (240, 160)
    assert size == (160, 240) and image.size == (160, 240)


@pytest.mark.parametrize(("name", "reason"), [("truncated", "truncated"), ("empty", "empty")])
def test_broken_files_name_themselves(odd: dict[str, Path], name: str, reason: str) -> None:
    with pytest.raises(ImageReadError) as caught:
        read_image(odd[name])
    assert str(odd[name]) in str(caught.value) and reason in str(caught.value)
    assert caught.value.hint is not None and "on_bad_image" in caught.value.hint


def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.fromarray(np.full((1200, 1600, 3), 90, dtype=np.uint8)).save(path)
    image, size = read_image(path, lambda s: (s[0] // 4, s[1] // 4))
    assert size == (1600, 1200)
    assert image.size == (400, 300)  # libjpeg's 1/4 scale covers the 400x300 asked for exactly
    full, _ = read_image(path)
    assert full.size == (1600, 1200)
