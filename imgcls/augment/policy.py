"""Augmentation policies for a whole batch on the device: torchvision's TrivialAugmentWide and RandAugment.

Both draw from the same 14 ops (torchvision's lists; neither has invert): identity, shear_x, shear_y,
translate_x, translate_y, rotate, brightness, color, contrast, sharpness, posterize, solarize, autocontrast,
equalize. Magnitudes come in 31 bins b = 0..30:

    op                        rand_augment (every op at bin `magnitude`)   trivial_augment (random bin per image)
    shear_x, shear_y          shear factor 0..0.3                           0..0.99
    translate_x, translate_y  0..150/331 of the width (height), whole px   0..32 px, whole px
    rotate                    0..30 degrees                                 0..135 degrees
    brightness, color,        factor 1 + (0..0.9)                           1 + (0..0.99)
    contrast, sharpness
    posterize                 8 - round(b / 7.5) bits (8..4)                8 - round(b / 5) bits (8..2)
    solarize                  threshold 1 - b / 30 (inverts x >= it)        the same
    autocontrast, equalize    no magnitude                                  no magnitude

The nine ops from shear_x to sharpness are signed: their magnitude is negated with probability 1/2 (a factor
becomes 1 - m). Pixel sizes are those of the output frame (the final size): the image a policy sees when it
follows the resize in a torchvision pipeline.

The geometric ops become matrices in the output frame that geometry.py folds into each image's affine map, so
an image is still resampled once and point targets follow exactly. The colour ops run on [0, 1] floats after
that resample, each on the images that drew it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

from imgcls.spec.data import PolicySpec

OPS = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)
SIGNED = frozenset(OPS[1:10])
BINS = 31
# torchvision's grey for saturation and contrast (ITU-R 601 luma with its rounding).
_LUMA = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class PolicyDraws:
    """Per image, the ops applied in turn (index into OPS) and their signed magnitudes in the op's own units
    (shear factor, pixels, degrees, factor - 1, bits, threshold), each of shape (N, ops per image)."""

    ops: torch.Tensor
    magnitudes: torch.Tensor


def magnitude_table(policy: PolicySpec, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(len(OPS), 31) magnitude of each op at each bin, unsigned, for an output of (height, width)."""
    height, width = size
    wide = policy.kind == "trivial_augment"
    shear, angle, factor = (0.99, 135.0, 0.99) if wide else (0.3, 30.0, 0.9)
    move_x, move_y = (32.0, 32.0) if wide else (150.0 / 331.0 * width, 150.0 / 331.0 * height)

    def ramp(top: float) -> torch.Tensor:
        return torch.linspace(0.0, top, BINS, device=device)

    zero = torch.zeros(BINS, device=device)
    bits = (8 - torch.arange(BINS, device=device) / ((BINS - 1) / (6 if wide else 4))).round()
    rows = {
        "shear_x": ramp(shear),
        "shear_y": ramp(shear),
        # torchvision translates by int(magnitude) pixels: truncated, which commutes with the sign.
        "translate_x": ramp(move_x).trunc(),
        "translate_y": ramp(move_y).trunc(),
        "rotate": ramp(angle),
        "brightness": ramp(factor),
        "color": ramp(factor),
        "contrast": ramp(factor),
        "sharpness": ramp(factor),
        "posterize": bits,
        "solarize": torch.linspace(1.0, 0.0, BINS, device=device),
    }
    return torch.stack([rows.get(name, zero) for name in OPS])


def draw_policy(
    policy: PolicySpec, n: int, size: tuple[int, int], device: torch.device, generator: torch.Generator | None
) -> PolicyDraws:
    """Op, bin and sign of every op of every image, from one call to the generator."""
    slots = policy.n if policy.kind == "rand_augment" else 1
    u = torch.rand(n, slots, 3, device=device, generator=generator)
    ops = (u[..., 0] * len(OPS)).long().clamp_(max=len(OPS) - 1)
    if policy.kind == "rand_augment":
        bins = torch.full_like(ops, policy.magnitude)
    else:
        bins = (u[..., 1] * BINS).long().clamp_(max=BINS - 1)
    table = magnitude_table(policy, size, device)
    # A non-blocking copy: torch.tensor(..., device=cuda) would wait for the kernels already queued.
    signed = torch.tensor([name in SIGNED for name in OPS]).to(device, non_blocking=True)[ops]
    sign = torch.where(signed & (u[..., 2] < 0.5), -1.0, 1.0)
    return PolicyDraws(ops, table[ops, bins] * sign)


# --- geometric ops: sampling maps in the output frame -----------------------------------------------------


def policy_matrices(draws: PolicyDraws, size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, 3) maps from the output frame to the frame before the policy, in normalized coordinates, with
    each image's ops composed in order; colour ops contribute the identity."""
    n, slots = draws.ops.shape
    total = torch.eye(3, device=draws.ops.device).repeat(n, 1, 1)
    for slot in range(slots):
        total = total @ _op_matrices(draws.ops[:, slot], draws.magnitudes[:, slot], size)
    return total


def _op_matrices(ops: torch.Tensor, magnitudes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchvision's inverse affine maps, in pixels about the image centre (y down), taken to normalized units:
    rotate by a (counter-clockwise): x' = cos a x - sin a y, y' = sin a x + cos a y; shear_x by m about the
    top-left corner: x' = x + m (y + H/2); shear_y: y' = y + m (x + W/2); translate by t px: x' = x - t."""
    height, width = size

    def amount(name: str) -> torch.Tensor:
        return torch.where(ops == OPS.index(name), magnitudes, 0.0)

    theta = amount("rotate") * (math.pi / 180.0)
    shear_x, shear_y = amount("shear_x"), amount("shear_y")
    move_x, move_y = amount("translate_x"), amount("translate_y")
    matrices = torch.eye(3, device=ops.device).repeat(ops.shape[0], 1, 1)
    # At most one of the five is non-zero per image, so their off-identity parts simply add.
    matrices[:, 0, 0] = torch.cos(theta)
    matrices[:, 1, 1] = torch.cos(theta)
    matrices[:, 0, 1] = (shear_x - torch.sin(theta)) * (height / width)
    matrices[:, 1, 0] = (shear_y + torch.sin(theta)) * (width / height)
    matrices[:, 0, 2] = shear_x * (height / width) - move_x * (2.0 / width)
    matrices[:, 1, 2] = shear_y * (width / height) - move_y * (2.0 / height)
    return matrices


# --- colour ops: torchvision's float kernels, for a sub-batch with one magnitude per image -------------------


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return x[:, 0:1] * _LUMA[0] + x[:, 1:2] * _LUMA[1] + x[:, 2:3] * _LUMA[2]


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    ratio = _per_image(factor)
    return (x * ratio + other * (1.0 - ratio)).clamp_(0.0, 1.0)


def _brightness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (x * _per_image(1.0 + m)).clamp_(0.0, 1.0)


def _color(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return x if x.shape[1] == 1 else _blend(x, _grey(x), 1.0 + m)


def _contrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return _blend(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True), 1.0 + m)


def _sharpness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Blend with a 3x3 smoothing (centre weight 5/13, the rest 1/13) of the interior; the 1-pixel border keeps
    its values, as PIL's ImageEnhance.Sharpness does."""
    channels, height, width = x.shape[1:]
    if height <= 2 or width <= 2:
        return x
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=x.dtype).to(x.device, non_blocking=True)
    smooth = F.conv2d(x, kernel.expand(channels, 1, 3, 3), groups=channels)
    out = x.clone()
    inner = out[..., 1:-1, 1:-1]
    inner.add_((smooth - inner) * _per_image(-m))  # factor f = 1 + m: x + (1 - f) (smooth - x)
    return out.clamp_(0.0, 1.0)


def _posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    levels = _per_image(torch.exp2(bits))
    return torch.minimum((x * levels).floor_(), levels - 1).div_(levels)


def _solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= _per_image(threshold), 1.0 - x, x)


def _autocontrast(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """Stretch each channel to [0, 1]; a constant channel is left as it is."""
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    flat = high == low
    scale = torch.where(flat, 1.0, high - low)
    return ((x - torch.where(flat, 0.0, low)) / scale).clamp_(0.0, 1.0)


def _equalize(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """PIL's histogram equalization per channel, on the image quantized to 256 levels as torchvision does."""
    pixels = x.shape[2] * x.shape[3]
    levels = (x * (256.0 - 1e-3)).to(torch.uint8).flatten(2).long()  # (M, C, HW)
    hist = torch.zeros(*levels.shape[:2], 256, device=x.device, dtype=torch.long)
    hist.scatter_add_(2, levels, torch.ones_like(levels))
    cumulative = hist.cumsum(2)
    # The first bin where the cumulative count peaks is the image's largest level.
    largest = cumulative.argmax(dim=2, keepdim=True)
    step = (pixels - hist.gather(2, largest)) // 255
    lut = ((cumulative[..., :-1] + step // 2) // step.clamp(min=1)).clamp_(0, 255)
    lut = torch.cat([torch.zeros_like(lut[..., :1]), lut], dim=2)
    equalized = torch.where(step != 0, lut.gather(2, levels), levels)
    return equalized.view(x.shape).to(x.dtype).mul_(1.0 / 255)


COLOUR_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "brightness": _brightness,
    "color": _color,
    "contrast": _contrast,
    "sharpness": _sharpness,
    "posterize": _posterize,
    "solarize": _solarize,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
}


def apply_colour_ops(x: torch.Tensor, draws: PolicyDraws) -> torch.Tensor:
    """Each image's colour ops, in order, on a [0, 1] batch (N, C, H, W); each op computed only on the images
    that drew it. Works in place on `x` and returns it."""
    n, slots = draws.ops.shape
    kinds = len(OPS)
    keys = (draws.ops + kinds * torch.arange(slots, device=draws.ops.device)).T  # (slots, N)
    # The one read from the device per batch: how many images drew each op in each slot. The image lists then
    # follow from one sort, so each op is computed on a gathered sub-batch of exactly its images.
    counts = torch.bincount(keys.flatten(), minlength=slots * kinds).tolist()
    order = torch.argsort(keys, dim=1, stable=True)
    for slot in range(slots):
        groups = torch.split(order[slot], counts[slot * kinds : (slot + 1) * kinds])
        for name, images in zip(OPS, groups, strict=True):
            op = COLOUR_OPS.get(name)
            if op is not None and images.numel():
                x[images] = op(x[images], draws.magnitudes[images, slot])
    return x


__all__ = ["COLOUR_OPS", "OPS", "PolicyDraws", "apply_colour_ops", "draw_policy", "magnitude_table", "policy_matrices"]
