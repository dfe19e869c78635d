"""Per-image geometry for a whole batch: flip, rotation, zoom, random square crop and perspective warp,
composed into one sampling grid, and the same map applied to point targets.

Coordinates are normalized to [-1, 1] with align_corners=False: -1 is the left edge of the first pixel and +1
the right edge of the last, which is also how point targets are scaled (x = 0 -> -1, x = width -> +1), so an
image and its points move together exactly, not within half a pixel.

The grid maps each output location q to the source location Warp(M q), M = F R Z C P (flip, rotate, zoom,
crop, policy), the order fastai composes its affine transforms in, with the crop after them because fastai
crops after its affine pass, and an augmentation policy's geometric ops (P) last, on the cropped output frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name

# Corners of the output frame and the directions a warp moves them in (fastai's keystone): magnitude y widens
# the top edge and narrows the bottom one, magnitude x does the same to the left and right edges.
_CORNERS = ((-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0))


@dataclass(frozen=True)
class GeometryParams:
    """Per-image draws, each a tensor of shape (N,)."""

    flip: torch.Tensor  # -1 or 1 (horizontal), or a dihedral index 0..7 when flip_vert
    angle: torch.Tensor  # degrees
    zoom: torch.Tensor  # >= 1 zooms in
    zoom_x: torch.Tensor  # window position in [0, 1]
    zoom_y: torch.Tensor
    crop: torch.Tensor  # side of the square crop as a fraction of the smaller side (1 = none)
    crop_x: torch.Tensor  # crop position in [0, 1]
    crop_y: torch.Tensor
    warp_x: torch.Tensor
    warp_y: torch.Tensor
    # (N, 3, 3) the policy's geometric ops (policy.py) as maps in the output frame, applied last; None: none.
    policy: torch.Tensor | None = None


def dihedral(index: torch.Tensor) -> torch.Tensor:
    """The 8 symmetries of the square as 2x2 matrices: bit 0 flips x, bit 1 flips y, bit 2 transposes."""
    sx = 1.0 - 2.0 * (index % 2).float()
    sy = 1.0 - 2.0 * ((index // 2) % 2).float()
    transpose = (index // 4) % 2 == 1
    zero = torch.zeros_like(sx)
    plain = torch.stack([torch.stack([sx, zero], -1), torch.stack([zero, sy], -1)], -2)
    swapped = torch.stack([torch.stack([zero, sx], -1), torch.stack([sy, zero], -1)], -2)
    return torch.where(transpose[:, None, None], swapped, plain)


def affine_matrices(
    params: GeometryParams, in_size: tuple[int, int], flip_vert: bool, square_crop: bool = False
) -> torch.Tensor:
    """(N, 3, 3) maps from output to input coordinates, aspect-corrected for an input of (height, width).

    `square_crop` adds the random square crop (min_scale < 1); without it the whole frame is kept. The policy's
    ops act on the output frame (M P: P maps an output location to where it was before the policy), so they ride
    in the same matrix and the same single resample, and point targets follow them through its inverse.
    """
    n, device = params.angle.shape[0], params.angle.device
    matrices = torch.eye(3, device=device).repeat(n, 1, 1)
    if flip_vert:
        matrices[:, :2, :2] = dihedral(params.flip.long())
    else:
        matrices[:, 0, 0] = params.flip
    theta = params.angle * (math.pi / 180.0)
    rotation = torch.eye(3, device=device).repeat(n, 1, 1)
    rotation[:, 0, 0], rotation[:, 0, 1] = torch.cos(theta), torch.sin(theta)
    rotation[:, 1, 0], rotation[:, 1, 1] = -torch.sin(theta), torch.cos(theta)
    zoom = torch.eye(3, device=device).repeat(n, 1, 1)
    scale = 1.0 / params.zoom
    zoom[:, 0, 0], zoom[:, 1, 1] = scale, scale
    zoom[:, 0, 2] = (1.0 - scale) * (2.0 * params.zoom_x - 1.0)
    zoom[:, 1, 2] = (1.0 - scale) * (2.0 * params.zoom_y - 1.0)
    matrices = matrices @ rotation @ zoom
    # Rotation must be a rotation in pixels, not in normalized units, on a non-square input.
    height, width = in_size
    matrices[:, 0, 1] *= height / width
    matrices[:, 1, 0] *= width / height
    if square_crop:
        matrices = matrices @ crop_matrices(params, in_size)
    return matrices if params.policy is None else matrices @ params.policy


def crop_matrices(params: GeometryParams, in_size: tuple[int, int]) -> torch.Tensor:
    """A square window (in pixels) of side crop * min(height, width) at (crop_x, crop_y)."""
    height, width = in_size
    n, device = params.crop.shape[0], params.crop.device
    side = params.crop * min(height, width)
    half_x, half_y = side / width, side / height
    crop = torch.eye(3, device=device).repeat(n, 1, 1)
    crop[:, 0, 0], crop[:, 1, 1] = half_x, half_y
    crop[:, 0, 2] = (1.0 - half_x) * (2.0 * params.crop_x - 1.0)
    crop[:, 1, 2] = (1.0 - half_y) * (2.0 * params.crop_y - 1.0)
    return crop


def warp_coefficients(warp_x: torch.Tensor, warp_y: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """(N, 3, 3) homographies moving the frame's corners by the warp magnitudes (inverse: back again)."""
    n, device = warp_x.shape[0], warp_x.device
    # Constants reach the device with non-blocking copies: a plain torch.tensor(..., device=cuda) waits for every
    # kernel already queued (the previous training step), which would stall the loop once per batch.
    source = torch.tensor(_CORNERS).to(device, non_blocking=True).expand(n, 4, 2)
    x, y = warp_x[:, None], warp_y[:, None]
    sign_a = torch.tensor([-1.0, 1.0, 1.0, -1.0]).to(device, non_blocking=True)  # first coordinate moves by y
    sign_b = torch.tensor([-1.0, 1.0, 1.0, -1.0]).to(device, non_blocking=True)  # second coordinate moves by x
    target = torch.stack([source[..., 0] + sign_a * y, source[..., 1] + sign_b * x], dim=-1)
    if inverse:
        source, target = target, source
    # Solve the 8 unknowns of H (h33 = 1) from the 4 correspondences source -> target.
    px, py = source[..., 0], source[..., 1]
    tx, ty = target[..., 0], target[..., 1]
    zeros, ones = torch.zeros_like(px), torch.ones_like(px)
    rows_x = torch.stack([px, py, ones, zeros, zeros, zeros, -tx * px, -tx * py], dim=-1)
    rows_y = torch.stack([zeros, zeros, zeros, px, py, ones, -ty * px, -ty * py], dim=-1)
    system = torch.cat([rows_x, rows_y], dim=1)
    rhs = torch.cat([tx, ty], dim=1)
    # solve_ex: linalg.solve reads its error flag back to the host (a sync per batch); these systems are never
    # singular (the warp moves each corner by less than the frame's half-width).
    coefficients, _ = torch.linalg.solve_ex(system, rhs)
    return torch.cat([coefficients, torch.ones(n, 1, device=device)], dim=1).view(n, 3, 3)


def apply_homography(homography: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Map (N, ..., 2) coordinates through (N, 3, 3) homographies."""
    n = coords.shape[0]
    flat = coords.reshape(n, -1, 2)
    ones = torch.ones_like(flat[..., :1])
    mapped = torch.cat([flat, ones], dim=-1) @ homography.transpose(1, 2)
    return (mapped[..., :2] / mapped[..., 2:]).reshape(coords.shape)


def sampling_grid(matrices: torch.Tensor, out_size: tuple[int, int], warp: torch.Tensor | None) -> torch.Tensor:
    """(N, H, W, 2) source coordinates for every output pixel."""
    n = matrices.shape[0]
    if warp is None:
        return F.affine_grid(matrices[:, :2], [n, 1, *out_size], align_corners=False)
    # The warp applied after the affine map is one homography, warp @ matrices: one pass over the pixels
    # instead of building the affine grid and then mapping it again.
    height, width = out_size
    eye = torch.eye(2, 3, device=matrices.device, dtype=matrices.dtype)[None]
    base = F.affine_grid(eye, [1, 1, height, width], align_corners=False).view(1, height * width, 2)
    homogeneous = torch.cat([base, torch.ones_like(base[..., :1])], dim=-1)
    mapped = homogeneous @ (warp @ matrices).transpose(1, 2)
    return (mapped[..., :2] / mapped[..., 2:]).view(n, height, width, 2)


def transform_points(points: torch.Tensor, matrices: torch.Tensor, warp: torch.Tensor | None) -> torch.Tensor:
    """Where points (N, P, 2) of the input end up in the output: the inverse of the sampling map."""
    if warp is not None:
        points = apply_homography(torch.linalg.inv(warp), points)
    return apply_homography(torch.linalg.inv(matrices), points)
