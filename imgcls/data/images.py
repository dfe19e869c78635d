"""Decoding one image file into 8-bit RGB, whatever the file holds.

EXIF orientation is applied; grey, palette, RGBA, CMYK and 16-bit images become RGB; a JPEG much larger than
what the item transform needs is decoded at a reduced scale (libjpeg's DCT scaling, 1/2 to 1/8), which is both
faster and an area-average of the full decode.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imgcls.errors import ImageReadError

# EXIF orientations 5-8 include a transpose, so the displayed width is the stored height.
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112
_WHITE = (255, 255, 255, 255)


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as the image is displayed, after its EXIF orientation."""
    width, height = image.size
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit int) grey scaled to 8 bits; PIL's own convert would clip everything above 255."""
    values = np.asarray(image, dtype=np.int64)
    top = 65535 if values.max(initial=0) > 255 else 255
    scaled = (np.clip(values, 0, top) * 255 + top // 2) // top
    return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")


def _float_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    top = 255.0 if values.max(initial=0.0) > 1.0 else 1.0
    scaled = np.clip(values / top, 0.0, 1.0) * 255.0 + 0.5
    return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Transparent pixels are composited onto white, as a viewer shows them."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_rgb(image)
    if mode == "F":
        return _float_to_rgb(image)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        background = Image.new("RGBA", image.size, _WHITE)
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _describe_failure(path: Path, err: Exception) -> str:
    try:
        if path.stat().st_size == 0:
            return "the file is empty (0 bytes)"
    except OSError:
        return "the file does not exist or cannot be opened"
    if isinstance(err, UnidentifiedImageError):
        return "not an image format Pillow can read"
    text = str(err)
    if "truncated" in text:
        return f"the file is truncated ({text})"
    return text or type(err).__name__


DraftFor = Callable[[tuple[int, int]], "tuple[int, int] | None"]


@dataclass(frozen=True)
class FileInfo:
    """What the file held before conversion to RGB: PIL's mode (L, P, RGBA, CMYK, I;16...), format, EXIF orientation."""

    mode: str
    format: str | None
    orientation: int


def read_image(path: Path, draft_for: DraftFor | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode `path` to RGB.

    Args:
        path: the image file.
        draft_for: given the displayed (width, height), the size the caller needs at least; JPEGs at least
            twice that size are decoded at the largest reduced scale that still covers it.

    Returns:
        The RGB image (possibly reduced) and the original displayed size (width, height).

    Raises:
        ImageReadError: the file is missing, empty, truncated or not an image.
    """
    image, size, _ = read_image_info(path, draft_for)
    return image, size


def read_image_info(path: Path, draft_for: DraftFor | None = None) -> tuple[Image.Image, tuple[int, int], FileInfo]:
    """read_image, and what the file held before conversion (one open of the file for both)."""
    try:
        with Image.open(path) as opened:
            orientation = opened.getexif().get(_EXIF_ORIENTATION, 1)
            info = FileInfo(opened.mode, opened.format, int(orientation))
            size = oriented_size(opened)
            draft_size = draft_for(size) if draft_for is not None else None
            if draft_size is not None and opened.format == "JPEG":
                transposed = orientation in _TRANSPOSING_ORIENTATIONS
                opened.draft("RGB", (draft_size[1], draft_size[0]) if transposed else draft_size)
            opened.load()
            # exif_transpose copies even an upright image, so call it only when there is work to do.
            image = ImageOps.exif_transpose(opened) if orientation != 1 else opened
            return to_rgb(image), size, info
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(str(path), _describe_failure(path, err)) from None


@dataclass(frozen=True)
class EncodedFile:
    """A file's bytes and what its header says, before any pixel is decoded."""

    data: bytes
    size: tuple[int, int]  # (width, height) as displayed, after the EXIF orientation
    info: FileInfo
    # A baseline 3-channel (YCbCr) JPEG with no EXIF rotation: what a batched device decoder takes as it is.
    # Left out: progressive JPEGs (nvjpeg decodes them on the host, one by one, in the training process) and
    # JPEGs with an Adobe marker (CMYK, or RGB stored without the YCbCr transform), which PIL reads correctly.
    plain_jpeg: bool


def read_encoded(path: Path) -> EncodedFile:
    """Read `path` whole and parse its header only (PIL opens lazily); raise ImageReadError as read_image does."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as opened:
            orientation = int(opened.getexif().get(_EXIF_ORIENTATION, 1))
            info = FileInfo(opened.mode, opened.format, orientation)
            size = oriented_size(opened)
            special = "progressive" in opened.info or "adobe_transform" in opened.info
            plain = info.format == "JPEG" and info.mode == "RGB" and orientation == 1 and not special
            return EncodedFile(data, size, info, plain)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(str(path), _describe_failure(path, err)) from None
