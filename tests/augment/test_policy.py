"""Policies on a batch: each op equals torchvision's on each image alone, points follow the geometric ops,
magnitudes are torchvision's tables, the draws come from the batch generator only."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode, RandAugment, TrivialAugmentWide
from torchvision.transforms.v2 import functional as TF  # noqa: N812

from imgcls.augment.pipeline import BatchAugment, BatchDraws
from imgcls.augment.policy import OPS, SIGNED, PolicyDraws, draw_policy, magnitude_table
from imgcls.spec.data import AugmentSpec, RandAugmentPolicy, TrivialAugmentPolicy

RAND = RandAugmentPolicy(kind="rand_augment")
TRIVIAL = TrivialAugmentPolicy(kind="trivial_augment")
# Everything of fastai's switched off and black margins: the batch transform is the policy alone, as torchvision's.
ONLY_POLICY = AugmentSpec(
    do_flip=False, max_rotate=0, max_zoom=1.0, max_warp=0, max_lighting=0, pad_mode="zeros", policy=RAND
)
BILINEAR = InterpolationMode.BILINEAR

# Two magnitudes per op, in the op's units (signed where the op is), so that images of one op group differ.
MAGNITUDES = {
    "identity": (0.0, 0.0),
    "shear_x": (0.3, -0.8),
    "shear_y": (-0.25, 0.5),
    "translate_x": (-5.0, 11.0),
    "translate_y": (3.0, -9.0),
    "rotate": (17.0, -128.0),
    "brightness": (0.4, -0.7),
    "color": (-0.6, 0.9),
    "contrast": (0.7, -0.5),
    "sharpness": (-0.8, 0.99),
    "posterize": (3.0, 6.0),
    "solarize": (0.6, 0.2),
    "autocontrast": (0.0, 0.0),
    "equalize": (0.0, 0.0),
}
# Max abs difference on [0, 1] floats. Resampling: two float32 grids of the same map (~3e-6 seen). Blends and
# scalings: float32 rounding of the same formula (~3e-6 seen). Identity, posterize, solarize, equalize: exact.
TOLERANCE = {"resample": 1e-5, "blend": 1e-5, "exact": 0.0}
EXACT = {"identity", "posterize", "solarize", "equalize"}
GEOMETRIC = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate"}


def torchvision_op(image: torch.Tensor, name: str, m: float) -> torch.Tensor:
    """torchvision's op as its policies call it (_apply_image_or_video_transform), with bilinear sampling."""
    if name in ("shear_x", "shear_y"):
        shear = [math.degrees(math.atan(m)), 0.0] if name == "shear_x" else [0.0, math.degrees(math.atan(m))]
        return TF.affine(
            image, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=BILINEAR, center=[0, 0]
        )
    if name in ("translate_x", "translate_y"):
        move = [int(m), 0] if name == "translate_x" else [0, int(m)]
        return TF.affine(image, angle=0.0, translate=move, scale=1.0, shear=[0.0, 0.0], interpolation=BILINEAR)
    calls = {
        "identity": lambda: image,
        "rotate": lambda: TF.rotate(image, m, interpolation=BILINEAR),
        "brightness": lambda: TF.adjust_brightness(image, 1.0 + m),
        "color": lambda: TF.adjust_saturation(image, 1.0 + m),
        "contrast": lambda: TF.adjust_contrast(image, 1.0 + m),
        "sharpness": lambda: TF.adjust_sharpness(image, 1.0 + m),
        "posterize": lambda: TF.posterize(image, int(m)),
        "solarize": lambda: TF.solarize(image, m),
        "autocontrast": lambda: TF.autocontrast(image),
        "equalize": lambda: TF.equalize(image),
    }
    return calls[name]()


def _mixed_draws(slots: int = 1) -> tuple[list[tuple[str, float]], PolicyDraws]:
    """Every op twice at two magnitudes, in a shuffled order, so neighbouring images drew different ops."""
    pairs = [(name, m) for name in OPS for m in MAGNITUDES[name]]
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0)).tolist()
    pairs = [pairs[i] for i in order]
    ops = torch.tensor([[OPS.index(name)] * slots for name, _ in pairs])
    magnitudes = torch.tensor([[m] * slots for _, m in pairs])
    return pairs, PolicyDraws(ops, magnitudes)


def _apply(images: torch.Tensor, policy: PolicyDraws | None, spec: AugmentSpec = ONLY_POLICY) -> torch.Tensor:
    augment = BatchAugment(spec)
    geometry = augment.draw(images.shape[0], images.device, torch.Generator().manual_seed(0))
    out, _, _ = augment.apply(images, None, BatchDraws(geometry, None, policy))
    return out


def test_each_op_on_a_mixed_batch_equals_torchvision_on_each_image() -> None:
    images = torch.randint(0, 256, (28, 3, 24, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    pairs, draws = _mixed_draws()
    out = _apply(images, draws)
    # What the colour ops were given: the batch after the one resample (here an identity map, within 3e-6).
    resampled = _apply(images, None)
    for index, (name, m) in enumerate(pairs):
        source = images[index].float() / 255 if name in GEOMETRIC else resampled[index]
        expected = torchvision_op(source, name, m)
        tolerance = TOLERANCE["resample" if name in GEOMETRIC else "exact" if name in EXACT else "blend"]
        difference = float((out[index] - expected).abs().max())
        assert difference <= tolerance, (name, m, difference)


def test_sequences_of_ops_apply_in_order() -> None:
    """rand_augment's n ops per image: colour ops in their order (solarize then brightness is not brightness then
    solarize), geometric ops composed in one map (whole-pixel translations resample exactly)."""
    images = torch.randint(0, 256, (3, 3, 20, 26), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    named = [
        ("solarize", 0.5, "brightness", 0.6),
        ("brightness", 0.6, "solarize", 0.5),
        ("translate_x", 4.0, "translate_y", -3.0),
    ]
    ops = torch.tensor([[OPS.index(a), OPS.index(b)] for a, _, b, _ in named])
    magnitudes = torch.tensor([[ma, mb] for _, ma, _, mb in named])
    out = _apply(images, PolicyDraws(ops, magnitudes))
    resampled = _apply(images, None)
    for index, (a, ma, b, mb) in enumerate(named):
        source = images[index].float() / 255 if a in GEOMETRIC else resampled[index]
        expected = torchvision_op(torchvision_op(source, a, ma), b, mb)
        assert float((out[index] - expected).abs().max()) <= 1e-5, (a, b)
    assert not torch.allclose(out[0], out[1])


def _dot(height: int, width: int, x: int, y: int) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.zeros(1, 3, height, width, dtype=torch.uint8)
    image[:, :, y - 1 : y + 2, x - 1 : x + 2] = 255
    return image, torch.tensor([[[(x + 0.5) * 2 / width - 1, (y + 0.5) * 2 / height - 1]]])


def _centroid(channel: torch.Tensor) -> tuple[float, float]:
    weight = channel.clamp(min=0)
    rows, cols = torch.meshgrid(
        torch.arange(channel.shape[0]).float(), torch.arange(channel.shape[1]).float(), indexing="ij"
    )
    total = weight.sum()
    return float((weight * cols).sum() / total) + 0.5, float((weight * rows).sum() / total) + 0.5


@pytest.mark.parametrize(
    ("spec", "size"),
    [
        (ONLY_POLICY, None),
        # fastai's rotation, zoom, warp and square crop as well, and a resize to a non-square output
        (
            AugmentSpec(
                max_rotate=20,
                max_zoom=1.3,
                max_warp=0.2,
                min_scale=0.7,
                max_lighting=0,
                p_affine=1.0,
                pad_mode="zeros",
                policy=RAND,
            ),
            (40, 56),
        ),
    ],
)
def test_a_marked_point_moves_with_the_geometric_ops_as_the_pixels_do(
    spec: AugmentSpec, size: tuple[int, int] | None
) -> None:
    image, point = _dot(60, 80, x=46, y=26)
    names = ["rotate", "rotate", "shear_x", "shear_x", "shear_y", "shear_y", "translate_x", "translate_y"]
    values = [25.0, -110.0, 0.3, -0.5, 0.4, -0.3, 7.0, -6.0]
    n = len(names)
    # Each image: one geometric op and, in the second slot, a second one, so composition is checked too.
    ops = torch.tensor([[OPS.index(names[i]), OPS.index(names[(i + 3) % n])] for i in range(n)])
    magnitudes = torch.tensor([[values[i], values[(i + 3) % n] / 2] for i in range(n)])
    augment = BatchAugment(spec, size)
    images, points = image.repeat(n, 1, 1, 1), point.repeat(n, 1, 1)
    draws = augment.draw_batch(images.shape, images.device, torch.Generator().manual_seed(4))
    out, moved, _ = augment.apply(images, points, BatchDraws(draws.geometry, None, PolicyDraws(ops, magnitudes)))
    assert moved is not None
    height, width = out.shape[2:]
    checked = 0
    for index in range(n):
        target = (float(moved[index, 0, 0] + 1) / 2 * width, float(moved[index, 0, 1] + 1) / 2 * height)
        if not (3 < target[0] < width - 3 and 3 < target[1] < height - 3):
            continue  # moved out of the frame
        assert math.dist(_centroid(out[index, 0]), target) < 1.0, (names[index], index)
        checked += 1
    assert checked >= 6


@pytest.mark.parametrize("policy", [RAND, TRIVIAL])
def test_magnitude_tables_are_torchvisions(policy: RandAugmentPolicy | TrivialAugmentPolicy) -> None:
    space = (TrivialAugmentWide if policy.kind == "trivial_augment" else RandAugment)._AUGMENTATION_SPACE
    names = {"ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x", "TranslateY": "translate_y",
             "Rotate": "rotate", "Brightness": "brightness", "Color": "color", "Contrast": "contrast",
             "Sharpness": "sharpness", "Posterize": "posterize", "Solarize": "solarize",
             "AutoContrast": "autocontrast", "Equalize": "equalize", "Identity": "identity"}  # fmt: skip
    assert sorted(names[key] for key in space) == sorted(OPS)  # the same 14 ops, and no Invert
    height, width = 48, 72
    table = magnitude_table(policy, (height, width), torch.device("cpu"))
    for key, (magnitudes_of, signed) in space.items():
        assert (names[key] in SIGNED) == signed, key
        expected = magnitudes_of(31, height, width)
        row = table[OPS.index(names[key])]
        if expected is None:
            assert torch.equal(row, torch.zeros(31)), key
            continue
        if key.startswith("Translate"):
            expected = expected.trunc()  # torchvision translates by int(magnitude) pixels
        assert torch.equal(row, expected.float()), key


def test_draws_follow_the_policy() -> None:
    generator = torch.Generator().manual_seed(0)
    rand = draw_policy(
        RandAugmentPolicy(kind="rand_augment", n=3, magnitude=9), 4000, (32, 32), torch.device("cpu"), generator
    )
    assert rand.ops.shape == (4000, 3)
    counts = torch.bincount(rand.ops.flatten(), minlength=len(OPS))
    assert int(counts.min()) > 12000 / 14 * 0.85  # every op, about equally often
    rotate = rand.magnitudes[rand.ops == OPS.index("rotate")]
    assert set(rotate.abs().tolist()) == {9.0} and 0.4 < float((rotate < 0).float().mean()) < 0.6
    assert set(rand.magnitudes[rand.ops == OPS.index("posterize")].tolist()) == {7.0}  # 8 - round(9 / 7.5)
    solarize = rand.magnitudes[rand.ops == OPS.index("solarize")]
    assert torch.allclose(solarize, torch.full_like(solarize, 0.7))  # unsigned: 1 - 9 / 30
    trivial = draw_policy(TRIVIAL, 4000, (32, 32), torch.device("cpu"), generator)
    assert trivial.ops.shape == (4000, 1)
    angles = trivial.magnitudes[trivial.ops == OPS.index("rotate")]
    assert float(angles.abs().max()) == 135.0 and len(set(angles.abs().tolist())) == 31


def test_policy_batches_are_seeded_and_leave_the_global_generator_alone() -> None:
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    augment = BatchAugment(AugmentSpec(policy=TRIVIAL), size=(24, 24))
    state = torch.get_rng_state()
    a, _ = augment(images, train=True, generator=torch.Generator().manual_seed(1))
    b, _ = augment(images, train=True, generator=torch.Generator().manual_seed(1))
    c, _ = augment(images, train=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)
