"""The fused batch transform: a marked point goes where its label goes; validation is deterministic."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch
from conftest import needs_cuda

from imgcls.augment.geometry import GeometryParams, affine_matrices, dihedral
from imgcls.augment.pipeline import IMAGENET, BatchAugment, Normalizer
from imgcls.spec.data import AugmentSpec, ErasingSpec, RandAugmentPolicy


def _dots(n: int, height: int, width: int, x: int, y: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.zeros(n, 3, height, width, dtype=torch.uint8)
    images[:, :, y - 1 : y + 2, x - 1 : x + 2] = 255
    point = torch.tensor([[(x + 0.5) * 2 / width - 1, (y + 0.5) * 2 / height - 1]])
    return images, point.repeat(n, 1, 1)


def _centroid(channel: torch.Tensor) -> tuple[float, float]:
    weight = channel.clamp(min=0)
    rows, cols = torch.meshgrid(
        torch.arange(channel.shape[0]).float(), torch.arange(channel.shape[1]).float(), indexing="ij"
    )
    total = weight.sum()
    return float((weight * cols).sum() / total) + 0.5, float((weight * rows).sum() / total) + 0.5


SPECS = {
    "flip": AugmentSpec(max_rotate=0, max_zoom=1.0, max_warp=0, max_lighting=0, p_affine=1.0),
    "rotate": AugmentSpec(do_flip=False, max_rotate=30, max_zoom=1.0, max_warp=0, max_lighting=0, p_affine=1.0),
    "zoom": AugmentSpec(do_flip=False, max_rotate=0, max_zoom=1.6, max_warp=0, max_lighting=0, p_affine=1.0),
    "warp": AugmentSpec(do_flip=False, max_rotate=0, max_zoom=1.0, max_warp=0.4, max_lighting=0, p_affine=1.0),
    "dihedral": AugmentSpec(flip_vert=True, max_rotate=0, max_zoom=1.0, max_warp=0, max_lighting=0),
    "everything": AugmentSpec(max_rotate=20, max_zoom=1.3, max_warp=0.3, min_scale=0.6, max_lighting=0, p_affine=1.0),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_marked_point_lands_on_its_label(name: str) -> None:
    images, points = _dots(16, 60, 90, x=40, y=28)
    augment = BatchAugment(SPECS[name].model_copy(update={"pad_mode": "zeros"}), size=(48, 64))
    out, moved = augment(images, points, train=True, generator=torch.Generator().manual_seed(3))
    assert moved is not None and out.shape == (16, 3, 48, 64)
    checked = 0
    for index in range(16):
        target = ((moved[index, 0, 0] + 1) / 2 * 64, (moved[index, 0, 1] + 1) / 2 * 48)
        if not (2 < target[0] < 62 and 2 < target[1] < 46):
            continue  # moved out of the frame by the crop or zoom
        found = _centroid(out[index, 0])
        assert math.dist(found, (float(target[0]), float(target[1]))) < 1.0, (name, index)
        checked += 1
    assert checked >= 8


def test_flip_is_exact() -> None:
    images = torch.arange(2 * 3 * 4 * 6, dtype=torch.uint8).view(2, 3, 4, 6)
    spec = AugmentSpec(max_rotate=0, max_zoom=1.0, max_warp=0, max_lighting=0)
    out, _ = BatchAugment(spec)(images, train=True, generator=torch.Generator().manual_seed(0))
    for index in range(2):
        plain = images[index].float() / 255
        assert torch.allclose(out[index], plain, atol=1e-5) or torch.allclose(out[index], plain.flip(-1), atol=1e-5)


def test_validation_only_resizes_and_is_identical_run_to_run() -> None:
    images = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    augment = BatchAugment(AugmentSpec(), size=(20, 20))
    first, _ = augment(images, train=False)
    second, _ = augment(images, train=False)
    assert torch.equal(first, second)
    # 40 -> 20 with no zoom is an exact 2x2 average (area pre-pass, then aligned bilinear)
    expected = torch.nn.functional.avg_pool2d(images.float() / 255, 2)
    assert torch.allclose(first, expected, atol=1e-5)
    same_size, _ = BatchAugment(AugmentSpec())(images, train=False)
    assert torch.equal(same_size, images.float() / 255)


def test_train_draws_come_from_the_generator_only() -> None:
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    augment = BatchAugment(AugmentSpec(), size=(24, 24))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a, _ = augment(images, train=True, generator=torch.Generator().manual_seed(1))
    b, _ = augment(images, train=True, generator=torch.Generator().manual_seed(1))
    c, _ = augment(images, train=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


def test_lighting_is_fastais_logit_formula() -> None:
    spec = AugmentSpec(do_flip=False, max_rotate=0, max_zoom=1.0, max_warp=0, max_lighting=0.2, p_lighting=1.0)
    images = torch.full((64, 3, 8, 8), 128, dtype=torch.uint8)
    out, _ = BatchAugment(spec)(images, train=True, generator=torch.Generator().manual_seed(0))
    x = 128 / 255
    # brightness b in [0.4, 0.6], contrast c in [0.8, 1.25]: sigmoid(c * (logit(x) + logit(b)))
    logit = lambda v: math.log(v / (1 - v))  # noqa: E731
    low = 1 / (1 + math.exp(-1.25 * (logit(x) + logit(0.4))))
    high = 1 / (1 + math.exp(-1.25 * (logit(x) + logit(0.6))))
    values = out[:, 0, 0, 0]
    assert low - 1e-4 <= float(values.min()) and float(values.max()) <= high + 1e-4
    assert float(values.std()) > 0.01


def test_normalize_and_denormalize() -> None:
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out, _ = BatchAugment(AugmentSpec(), normalizer=IMAGENET)(images, train=False)
    assert torch.allclose(
        out[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    )
    assert torch.allclose(IMAGENET.denormalize(out), torch.ones_like(out), atol=1e-6)
    custom = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.allclose(custom(torch.full((1, 3, 1, 1), 0.75)), torch.ones(1, 3, 1, 1))


def test_dihedral_group_has_eight_distinct_elements() -> None:
    mats = dihedral(torch.arange(8))
    assert len({tuple(m.flatten().tolist()) for m in mats}) == 8
    assert torch.equal(mats[0], torch.eye(2))


def test_rotation_is_a_pixel_rotation_on_non_square_inputs() -> None:
    n = 1
    params = GeometryParams(
        flip=torch.ones(n),
        angle=torch.full((n,), 90.0),
        zoom=torch.ones(n),
        zoom_x=torch.full((n,), 0.5),
        zoom_y=torch.full((n,), 0.5),
        crop=torch.ones(n),
        crop_x=torch.full((n,), 0.5),
        crop_y=torch.full((n,), 0.5),
        warp_x=torch.zeros(n),
        warp_y=torch.zeros(n),
    )
    matrix = affine_matrices(params, (50, 100), flip_vert=False)[0]
    # a 90 degree turn of an image twice as wide as high: x (normalized) maps to y scaled by W/H
    assert torch.allclose(matrix[:2, :2], torch.tensor([[0.0, 0.5], [-2.0, 0.0]]), atol=1e-6)


def test_grey_batches_for_one_channel_models() -> None:
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    images[:, 0] = 255  # pure red
    out, _ = BatchAugment(AugmentSpec(), channels=1, normalizer=IMAGENET)(images, train=False)
    assert out.shape == (2, 1, 4, 4)
    luma, mean, std = 0.299, sum(IMAGENET.mean) / 3, sum(IMAGENET.std) / 3
    assert torch.allclose(out, torch.full_like(out, (luma - mean) / std), atol=1e-5)


def test_validation_resize_equals_the_identity_grid_sample() -> None:
    """The validation fast path (F.interpolate) takes exactly the samples of the general path."""
    images = torch.randint(0, 256, (3, 3, 50, 70), dtype=torch.uint8)
    fast, _ = BatchAugment(AugmentSpec(), size=(40, 44))(images, train=False)
    x = images.float() / 255
    grid = torch.nn.functional.affine_grid(torch.eye(2, 3).repeat(3, 1, 1), [3, 3, 40, 44], align_corners=False)
    general = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    assert torch.allclose(fast, general, atol=1e-5)


def test_the_folded_warp_grid_equals_affine_then_warp() -> None:
    from imgcls.augment.geometry import apply_homography, sampling_grid, warp_coefficients

    generator = torch.Generator().manual_seed(0)
    matrices = torch.eye(3).repeat(4, 1, 1)
    matrices[:, :2] += 0.2 * torch.randn(4, 2, 3, generator=generator)
    warp = warp_coefficients(0.3 * torch.rand(4, generator=generator), -0.2 * torch.rand(4, generator=generator))
    two_passes = apply_homography(
        warp, torch.nn.functional.affine_grid(matrices[:, :2], [4, 1, 9, 13], align_corners=False)
    )
    assert torch.allclose(sampling_grid(matrices, (9, 13), warp), two_passes, atol=1e-5)


# --- policy and erasing: added after the existing draws, training only ------------------------------------------

REGULARIZED = AugmentSpec(
    min_scale=0.7,
    policy=RandAugmentPolicy(kind="rand_augment", n=2, magnitude=9),
    erasing=ErasingSpec(p=0.5, mode="pixel", max_count=2),
)


def test_without_a_policy_the_batch_is_the_fastai_path_written_out() -> None:
    """Bit for bit what the transform computed before policies existed: geometry draws, one resample, lighting
    from the next draws, grey, normalization."""
    from imgcls.augment.geometry import sampling_grid, warp_coefficients

    images = torch.randint(0, 256, (6, 3, 50, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    spec = AugmentSpec(min_scale=0.6)
    augment = BatchAugment(spec, (32, 40), IMAGENET, channels=1)
    out, _ = augment(images, train=True, generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    params = augment.draw(6, images.device, generator)
    matrices = affine_matrices(params, (50, 70), flip_vert=False, square_crop=True)
    grid = sampling_grid(matrices, (32, 40), warp_coefficients(params.warp_x, params.warp_y))
    x = torch.nn.functional.grid_sample(
        images.float() / 255, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    x = augment.lighting(x, generator)
    x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    assert torch.equal(out, IMAGENET(x))


def test_policy_and_erasing_draw_after_the_existing_draws() -> None:
    plain, regularized = BatchAugment(AugmentSpec(min_scale=0.7)), BatchAugment(REGULARIZED)
    shape, cpu = (8, 3, 40, 40), torch.device("cpu")
    before = plain.draw_batch(shape, cpu, torch.Generator().manual_seed(3))
    after = regularized.draw_batch(shape, cpu, torch.Generator().manual_seed(3))
    for name in ("flip", "angle", "zoom", "zoom_x", "zoom_y", "crop", "crop_x", "crop_y", "warp_x", "warp_y"):
        assert torch.equal(getattr(before.geometry, name), getattr(after.geometry, name)), name
    assert before.lighting is not None and after.lighting is not None
    assert torch.equal(before.lighting, after.lighting)
    assert before.policy is None and before.erasing is None
    assert after.policy is not None and after.erasing is not None


def test_policy_and_erasing_are_off_for_validation_and_tta() -> None:
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    points = torch.rand(8, 2, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    plain = BatchAugment(AugmentSpec(min_scale=0.7), (32, 32), IMAGENET)
    regularized = BatchAugment(REGULARIZED, (32, 32), IMAGENET)
    for train in (False, True):
        reference, reference_points = plain(images, points, train=train, generator=torch.Generator().manual_seed(4))
        augment = regularized if not train else regularized.for_tta()
        out, moved = augment(images, points, train=train, generator=torch.Generator().manual_seed(4))
        assert torch.equal(out, reference) and moved is not None and reference_points is not None
        assert torch.equal(moved, reference_points)
    trained, _ = regularized(images, points, train=True, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(trained, reference)  # ... and on for training


def test_regularized_batches_are_the_same_for_the_same_seed() -> None:
    """Resume is exact: a batch's policy ops, erasing rectangles and noise come from its seeded generator only."""
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    points = torch.rand(8, 1, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    augment = BatchAugment(REGULARIZED, (32, 32), IMAGENET)
    state = torch.get_rng_state()
    a, pa = augment(images, points, train=True, generator=torch.Generator().manual_seed(9))
    b, pb = augment(images, points, train=True, generator=torch.Generator().manual_seed(9))
    c, _ = augment(images, points, train=True, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and pa is not None and pb is not None and torch.equal(pa, pb)
    assert not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


def _moved(value: Any, device: torch.device) -> Any:
    """A dataclass of draws (nested dataclasses, tensors, None) with every tensor on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _moved(getattr(value, f.name), device) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes)
    return value


CUDA_SPECS = {
    # flip, rotation, zoom, warp and a random crop in one grid_sample, then lighting and erasing (pixel noise)
    "aug_transforms": AugmentSpec(
        max_rotate=20, max_zoom=1.3, max_warp=0.3, min_scale=0.6, p_affine=1.0, erasing=ErasingSpec(p=0.5)
    ),
    # the same with rand_augment's geometric and colour ops
    "policy": AugmentSpec(max_warp=0.2, policy=RandAugmentPolicy(kind="rand_augment", n=2, magnitude=9)),
}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", list(CUDA_SPECS))
def test_fused_augmentation_on_cuda_equals_the_cpu(name: str, record_property: Any) -> None:
    """The same draws (made on the CPU, then moved) give the same batch on CUDA within 1e-3 in normalized
    units (0.06 grey levels); points within 1e-5. Posterize and solarize threshold their inputs, so with a
    policy a few values may land on the other side of a threshold: there 99.9% of values must agree."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 60, 90), dtype=torch.uint8, generator=generator)
    _, points = _dots(16, 60, 90, x=40, y=28)
    augment = BatchAugment(CUDA_SPECS[name], size=(48, 64), normalizer=IMAGENET)
    draws = augment.draw_batch((16, 3, 60, 90), torch.device("cpu"), torch.Generator().manual_seed(1))
    on_cpu, cpu_points, _ = augment.apply(images, points, draws)
    cuda = torch.device("cuda")
    on_cuda, cuda_points, _ = augment.apply(images.to(cuda), points.to(cuda), _moved(draws, cuda))
    difference = (on_cuda.cpu() - on_cpu).abs()
    record_property("max_difference", float(difference.max()))
    record_property("mean_difference", float(difference.mean()))
    assert cpu_points is not None and cuda_points is not None
    assert torch.allclose(cuda_points.cpu(), cpu_points, atol=1e-5)
    assert float(difference.mean()) < 1e-4
    if name == "policy":
        assert float((difference > 1e-3).float().mean()) < 1e-3
    else:
        assert float(difference.max()) < 1e-3
