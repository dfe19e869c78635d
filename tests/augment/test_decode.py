"""The device-side cut and resize of data.decode: device equals PIL's resample of the same pixels (the PIL path's
item_tfms.apply_window) within 1 grey level, for every window kind; padding copies pixels as np.pad does."""

from __future__ import annotations

import io
import random
from typing import Any

import numpy as np
import pytest
import torch
from conftest import needs_cuda
from PIL import Image

from imgcls.augment.decode import _chunks, _padded_index, check_decoder, cut_windows, decode_jpegs
from imgcls.data.item_tfms import ItemTransform, RandomResizedCrop, Resize, Window, apply_window
from imgcls.errors import DataError


def _photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth colour blotches plus noise (std 20 levels): edges and texture at every scale, HWC uint8."""
    coarse = (rng.random((height // 8 + 2, width // 8 + 2, 3)) * 255).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)


def _cut(pixels: np.ndarray, window: Window) -> np.ndarray:
    picture = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    return cut_windows([picture], [window], (window.out[1], window.out[0]))[0].permute(1, 2, 0).numpy()


TRANSFORMS: dict[str, ItemTransform] = {
    "crop": Resize((72, 72), "crop"),
    "squish": Resize((60, 90), "squish"),
    "rrc": RandomResizedCrop((64, 64), min_scale=0.3),
    "pad_zeros": Resize((80, 80), "pad", "zeros"),
    "pad_border": Resize((80, 80), "pad", "border"),
    "pad_reflection": Resize((80, 80), "pad", "reflection"),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("train", [True, False])
def test_cut_equals_pil_within_one_level(name: str, train: bool) -> None:
    rng = np.random.default_rng(len(name))
    for trial in range(6):
        # 40-400 px sources: upscales to 2x and downscales to 5x (below PIL's 6x reducing_gap shortcut).
        width, height = int(rng.integers(40, 380)), int(rng.integers(40, 380))
        pixels = _photo(rng, width, height)
        window = TRANSFORMS[name].window((width, height), random.Random(trial) if train else None)
        expected = apply_window(Image.fromarray(pixels), window, (width, height))
        got = _cut(pixels, window)
        assert got.shape == expected.shape
        difference = np.abs(got.astype(int) - expected.astype(int))
        # PIL rounds to 8 bits between its horizontal and vertical passes; the products do not.
        assert difference.max() <= 1, (name, trial, width, height)
        assert difference.mean() < 0.25


def test_large_downscales_are_antialiased_like_pil() -> None:
    """Past a 6x downscale PIL first box-reduces by an integer factor (reducing_gap 3); the products apply the
    widened triangle filter directly. Measured on this 342 px -> 25 px squish: at most 8 levels, 0.65 mean."""
    pixels = _photo(np.random.default_rng(5), 92, 342)
    window = Resize((25, 32), "squish").window((92, 342), None)
    difference = np.abs(_cut(pixels, window).astype(int) - apply_window(Image.fromarray(pixels), window, (92, 342)))
    assert difference.max() <= 10 and difference.mean() < 1.0
    aliased = np.asarray(Image.fromarray(pixels).resize((32, 25), Image.Resampling.NEAREST)).astype(int)
    assert np.abs(_cut(pixels, window).astype(int) - aliased).mean() > 4 * difference.mean()


@pytest.mark.parametrize(("mode", "numpy_mode"), [("border", "edge"), ("reflection", "reflect")])
def test_padding_indices_are_np_pad(mode: str, numpy_mode: str) -> None:
    code = {"border": 1, "reflection": 2}[mode]
    for n in (1, 2, 3, 7):
        before, after = 11, 13  # wider than n: reflection folds more than once
        expected = np.pad(np.arange(n), (before, after), mode=numpy_mode)  # type: ignore[call-overload]
        k = torch.arange(-before, n + after)
        got = _padded_index(k, torch.tensor(n), torch.tensor(code))
        assert got.tolist() == expected.tolist(), (mode, n)


def test_images_of_different_sizes_share_a_batch() -> None:
    rng = np.random.default_rng(1)
    sizes = [(120, 90), (61, 200), (300, 33)]
    transform = Resize((48, 48), "crop")
    pictures, windows, expected = [], [], []
    for number, (width, height) in enumerate(sizes):
        pixels = _photo(rng, width, height)
        window = transform.window((width, height), random.Random(number))
        pictures.append(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())
        windows.append(window)
        expected.append(apply_window(Image.fromarray(pixels), window, (width, height)))
    batch = cut_windows(pictures, windows, (48, 48)).permute(0, 2, 3, 1).numpy()
    for got, want in zip(batch, expected, strict=True):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_chunks_cover_every_image_once_and_keep_to_the_budget() -> None:
    sizes = [(4000, 3000), (300, 200), (310, 220), (5000, 5000), (64, 64)]
    groups = _chunks(sizes)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
    for group in groups:
        width, height = max(sizes[i][0] for i in group), max(sizes[i][1] for i in group)
        assert len(group) == 1 or 3 * width * height * len(group) <= 1 << 26
    assert [3] in groups and [0] in groups  # the huge ones alone; the small ones together
    assert any(set(g) >= {1, 2, 4} for g in groups)


def _jpeg(pixels: np.ndarray) -> torch.Tensor:
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="JPEG", quality=90)
    return torch.frombuffer(bytearray(stream.getvalue()), dtype=torch.uint8)


def test_decode_jpegs_equals_pil_and_isolates_a_broken_file() -> None:
    pixels = _photo(np.random.default_rng(2), 64, 48)
    good = _jpeg(pixels)
    broken = good[: len(good) // 2].clone()
    pictures = decode_jpegs([good, broken, good], torch.device("cpu"))
    assert pictures[1] is None and pictures[0] is not None and pictures[2] is not None
    reference = np.asarray(Image.open(io.BytesIO(good.numpy().tobytes())).convert("RGB"))
    # The same libjpeg-turbo settings as Pillow's: the decoded pixels are identical on the CPU.
    assert np.array_equal(pictures[0].permute(1, 2, 0).numpy(), reference)


@pytest.mark.gpu
@needs_cuda
def test_device_decoding_on_cuda_matches_the_cpu(record_property: Any) -> None:
    """nvjpeg (with its hardware decoder where the GPU has one) against libjpeg-turbo, then the cut in fp16 on
    tensor cores against fp32 on the CPU. nvjpeg's IDCT and chroma upsampling are its own, so pixels differ
    slightly: the bounds (mean under 1.5 levels, 99% of values within 8) are loose until a GPU run has measured
    them; the measured figures are recorded as test properties (junit XML)."""
    rng = np.random.default_rng(4)
    sizes = [(300, 400), (600, 450), (333, 517), (460, 460)]
    files = [_jpeg(_photo(rng, width, height)) for width, height in sizes]
    windows = [Resize((224, 224), "crop").window(size, random.Random(n)) for n, size in enumerate(sizes)]
    cpu = cut_windows([p for p in decode_jpegs(files, torch.device("cpu")) if p is not None], windows, (224, 224))
    decoded = decode_jpegs(files, torch.device("cuda"))
    assert all(p is not None and p.is_cuda for p in decoded)
    cuda = cut_windows([p for p in decoded if p is not None], windows, (224, 224))
    difference = (cuda.cpu().int() - cpu.int()).abs().float()
    record_property("mean_difference", float(difference.mean()))
    record_property("p99_difference", float(difference.flatten().quantile(0.99)))
    record_property("max_difference", float(difference.max()))
    assert float(difference.mean()) < 1.5 and float(difference.flatten().quantile(0.99)) <= 8
    broken = files[0][: len(files[0]) // 2].clone()
    assert decode_jpegs([files[1], broken], torch.device("cuda"))[1] is None  # isolated, not fatal


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a device that cannot decode")
def test_a_device_that_cannot_decode_stops_with_what_to_do() -> None:
    check_decoder(torch.device("cpu"))  # libjpeg-turbo through the same call: fine
    with pytest.raises(DataError, match="data.decode: device cannot decode JPEGs on cuda") as caught:
        check_decoder(torch.device("cuda"))
    assert "data.decode: pil" in str(caught.value.hint)
