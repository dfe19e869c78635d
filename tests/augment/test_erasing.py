"""Random erasing on a batch: exactly the drawn rectangles change, filled per mode; rectangles follow timm's rules."""

from __future__ import annotations

import math

import pytest
import torch

from imgcls.augment.erasing import (
    MAX_AREA,
    MIN_AREA,
    MIN_ASPECT,
    TRIES,
    draw_erasing,
    erase,
    erasing_masks,
    rectangle_from_uniforms,
)
from imgcls.augment.pipeline import IMAGENET, BatchAugment
from imgcls.spec.data import AugmentSpec, ErasingSpec

CPU = torch.device("cpu")


@pytest.mark.parametrize("mode", ["pixel", "rand", "const"])
def test_exactly_the_drawn_rectangles_change(mode: str) -> None:
    spec = ErasingSpec.model_validate({"p": 1.0, "mode": mode, "max_count": 3})
    x = torch.randn(32, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    draws = draw_erasing(spec, (32, 3, 40, 48), CPU, torch.Generator().manual_seed(1))
    out = erase(x.clone(), draws)
    masks = erasing_masks(draws, (40, 48))  # (3, 32, 1, 40, 48)
    inside = masks.any(dim=0).expand_as(x)
    assert torch.equal(out[~inside], x[~inside])  # bit for bit outside
    assert bool(draws.active[0].all())  # p = 1: every image has its first rectangle (all fit at 40 x 48)
    if mode == "const":
        assert bool((out[inside] == 0).all())
    elif mode == "pixel":
        assert draws.fill is not None and torch.equal(out[inside], draws.fill[inside])
        assert abs(float(out[inside].mean())) < 0.05 and abs(float(out[inside].std()) - 1) < 0.05
    else:
        assert draws.fill is not None
        for image in range(32):
            for slot in range(3):  # the last rectangle drawn wins where two overlap
                only_here = masks[slot, image, 0] & ~masks[slot + 1 :, image, 0].any(dim=0)
                values = out[image][:, only_here]
                assert torch.equal(values, draws.fill[slot, image][:, None].expand_as(values))


def test_rectangles_follow_timms_rules() -> None:
    spec = ErasingSpec(p=0.5, mode="const", max_count=2)
    height, width = 30, 50
    draws = draw_erasing(spec, (4000, 1, height, width), CPU, torch.Generator().manual_seed(2))
    active = draws.active  # (2, 4000)
    erased = active.any(dim=0)
    assert 0.46 < float(erased.float().mean()) < 0.54  # p
    two = active.all(dim=0)
    assert 0.4 < float(two[erased].float().mean()) < 0.6  # count uniform in 1..max_count
    assert int(draws.height[~active].sum()) == 0 and int(draws.width[~active].sum()) == 0
    for slot in range(2):
        on = active[slot]
        top, left, rows, cols = (part[slot][on] for part in (draws.top, draws.left, draws.height, draws.width))
        assert bool((top >= 0).all() and (top + rows <= height).all())
        assert bool((left >= 0).all() and (left + cols <= width).all())
        assert bool(((rows < height) & (cols < width)).all())  # timm's fit test: strictly smaller
    area = draws.height * draws.width
    # 2%..1/3 of the 1500 px, shared by the count; sides rounded to whole pixels (+-0.5 px each)
    shared, single = area[:, two], area[0, erased & ~two]
    assert int(shared.min()) >= 10 and int(shared.max()) <= 1500 * MAX_AREA / 2 * 1.1
    assert int(single.max()) <= 1500 * MAX_AREA * 1.1
    assert 200 < float(single.float().mean()) < 300  # mean of U(0.02, 1/3) x 1500 = 265, less the misfits


def test_one_rectangle_is_timms_formula_on_the_same_uniforms() -> None:
    """timm: area ~ U(0.02, 1/3) * H * W / count, aspect = exp(U(log 0.3, log 1/0.3)), h = round(sqrt(area *
    aspect)), w = round(sqrt(area / aspect)), first try with w < W and h < H, top = randint(0, H - h)."""
    height, width, count = 30, 50, 2
    u = torch.rand(64, 2 * TRIES + 2, generator=torch.Generator().manual_seed(3))
    u[:5, 0:2] = torch.tensor([0.999, 0.999])  # the first try of these five is too large, so a later one is used
    top, left, rows, cols, fits = rectangle_from_uniforms(u, torch.full((64,), float(count)), (height, width))
    for image in range(64):
        expected = None
        for attempt in range(TRIES):
            area = (MIN_AREA + float(u[image, 2 * attempt]) * (MAX_AREA - MIN_AREA)) * height * width / count
            log_low, log_high = math.log(MIN_ASPECT), math.log(1 / MIN_ASPECT)
            aspect = math.exp(log_low + float(u[image, 2 * attempt + 1]) * (log_high - log_low))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if w < width and h < height:
                expected = (h, w)
                break
        assert bool(fits[image]) == (expected is not None)
        if expected is not None:
            assert (int(rows[image]), int(cols[image])) == expected, image
            assert int(top[image]) == math.floor(float(u[image, -2]) * (height - expected[0] + 1))
            assert int(left[image]) == math.floor(float(u[image, -1]) * (width - expected[1] + 1))


def test_erasing_runs_after_normalization_on_training_batches_only() -> None:
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    plain = AugmentSpec(max_lighting=0)
    erasing = plain.model_copy(update={"erasing": ErasingSpec(p=1.0, mode="const")})
    before, _ = BatchAugment(plain, normalizer=IMAGENET)(images, train=True, generator=torch.Generator().manual_seed(5))
    after, _ = BatchAugment(erasing, normalizer=IMAGENET)(
        images, train=True, generator=torch.Generator().manual_seed(5)
    )
    changed = after != before
    assert bool(changed.any(dim=(1, 2, 3)).all())  # every image lost a rectangle
    assert bool((after[changed] == 0).all())  # 0 in normalized units: the mean colour, not black
    valid_before, _ = BatchAugment(plain, normalizer=IMAGENET)(images, train=False)
    valid_after, _ = BatchAugment(erasing, normalizer=IMAGENET)(images, train=False)
    assert torch.equal(valid_after, valid_before)
