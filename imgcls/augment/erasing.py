"""Random erasing for a whole batch on the device, with timm's RandomErasing semantics (`--reprob`).

Per image with probability p: a count of 1..max_count rectangles (uniform), each of a target area uniform in
2%..1/3 of the image divided by the count, with a log-uniform aspect (height / width) in 0.3..1/0.3; up to 10
tries per rectangle for one that fits inside the image (sides rounded to whole pixels), at a uniform position.
The rectangle is filled with per-pixel N(0, 1) noise (pixel), one N(0, 1) value per channel (rand) or 0
(const): values meant for a normalized batch, where 0 is the mean colour.

Rectangles are masks over the whole batch, one pass per rectangle slot; no loop over images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from imgcls.spec.data import ErasingSpec

MIN_AREA, MAX_AREA = 0.02, 1.0 / 3.0
MIN_ASPECT = 0.3
TRIES = 10


@dataclass(frozen=True)
class ErasingDraws:
    """Rectangle slot s of image i: rows top..top+height-1, columns left..left+width-1, erased when active.
    Each of top, left, height, width, active has shape (max_count, N). `fill`: the pixel noise (N, C, H, W),
    the per-rectangle colours (max_count, N, C), or None for 0."""

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    active: torch.Tensor
    fill: torch.Tensor | None


def draw_erasing(
    spec: ErasingSpec,
    shape: tuple[int, int, int, int],
    device: torch.device,
    generator: torch.Generator | None,
) -> ErasingDraws:
    """Rectangles (and fill values) for a batch of `shape` (N, C, H, W): one uniform draw, then one normal draw."""
    n, channels, height, width = shape
    slots = spec.max_count
    per_slot = 2 * TRIES + 2
    u = torch.rand(n, 2 + slots * per_slot, device=device, generator=generator)
    erased = u[:, 0] < spec.p
    count = (u[:, 1] * slots).floor().clamp(max=slots - 1) + 1
    drawn = [
        rectangle_from_uniforms(u[:, 2 + slot * per_slot : 2 + (slot + 1) * per_slot], count, (height, width))
        for slot in range(slots)
    ]
    top, left, rows, cols, fits = (torch.stack(part) for part in zip(*drawn, strict=True))
    active = erased[None] & (torch.arange(slots, device=device)[:, None] < count[None]) & fits
    fill: torch.Tensor | None = None
    if spec.mode == "pixel":
        fill = torch.randn(n, channels, height, width, device=device, generator=generator)
    elif spec.mode == "rand":
        fill = torch.randn(slots, n, channels, device=device, generator=generator)
    keep = active.long()
    return ErasingDraws(top * keep, left * keep, rows * keep, cols * keep, active, fill)


def rectangle_from_uniforms(
    u: torch.Tensor, count: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One rectangle per image from its uniforms (N, 2 * TRIES + 2): top, left, height, width and whether any
    of the tries fitted."""
    height, width = size
    n = u.shape[0]
    tries = u[:, : 2 * TRIES].view(n, TRIES, 2)
    area = (MIN_AREA + tries[..., 0] * (MAX_AREA - MIN_AREA)) * (height * width) / count[:, None]
    log_low, log_high = math.log(MIN_ASPECT), math.log(1 / MIN_ASPECT)
    aspect = torch.exp(log_low + tries[..., 1] * (log_high - log_low))
    rows, cols = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (rows < height) & (cols < width)
    first = fits.float().argmax(dim=1, keepdim=True)  # the first try that fits (0 when none does)
    rows, cols = rows.gather(1, first).squeeze(1), cols.gather(1, first).squeeze(1)
    # A uniform position among the (side - rectangle + 1) that keep it inside (timm's randint, inclusive end).
    top = torch.minimum((u[:, -2] * (height - rows + 1)).floor(), height - rows).clamp(min=0)
    left = torch.minimum((u[:, -1] * (width - cols + 1)).floor(), width - cols).clamp(min=0)
    return top.long(), left.long(), rows.long(), cols.long(), fits.any(dim=1)


def erasing_masks(draws: ErasingDraws, size: tuple[int, int]) -> torch.Tensor:
    """(max_count, N, 1, H, W): True inside each drawn rectangle of each image."""
    height, width = size
    rows = torch.arange(height, device=draws.top.device).view(1, 1, 1, height, 1)
    cols = torch.arange(width, device=draws.top.device).view(1, 1, 1, 1, width)

    def edge(values: torch.Tensor) -> torch.Tensor:
        return values.view(*values.shape, 1, 1, 1)

    inside_rows = (rows >= edge(draws.top)) & (rows < edge(draws.top + draws.height))
    inside_cols = (cols >= edge(draws.left)) & (cols < edge(draws.left + draws.width))
    return inside_rows & inside_cols & edge(draws.active)


def erase(x: torch.Tensor, draws: ErasingDraws) -> torch.Tensor:
    """The batch with every active rectangle filled; every other pixel is returned unchanged."""
    masks = erasing_masks(draws, (x.shape[2], x.shape[3]))
    for slot in range(masks.shape[0]):
        if draws.fill is None:
            fill = torch.zeros((), device=x.device, dtype=x.dtype)
        elif draws.fill.ndim == 3:  # one colour per rectangle
            fill = draws.fill[slot].to(x.dtype)[..., None, None]
        else:  # per-pixel noise; overlapping rectangles share it, each pixel is still one N(0, 1) draw
            fill = draws.fill.to(x.dtype)
        x = torch.where(masks[slot], fill, x)
    return x


__all__ = ["ErasingDraws", "draw_erasing", "erase", "erasing_masks", "rectangle_from_uniforms"]
