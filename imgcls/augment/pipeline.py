"""The batch transform: uint8 batch on the device -> augmented, resized, normalized float batch.

Train: per-image flip, rotation, zoom, warp and random crop (and a policy's geometric ops) in ONE grid_sample,
then brightness and contrast, the policy's colour ops, grey conversion, normalization and random erasing.
Valid: only the resize to the final size (and the centre square crop when min_scale < 1), through the same
sampler so that train and valid images are resampled alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from imgcls.augment.erasing import ErasingDraws, draw_erasing, erase
from imgcls.augment.geometry import (
    GeometryParams,
    affine_matrices,
    apply_homography,
    sampling_grid,
    transform_points,
    warp_coefficients,
)
from imgcls.augment.policy import PolicyDraws, apply_colour_ops, draw_policy, policy_matrices
from imgcls.spec.data import AugmentSpec

_GRID_PADDING = {"zeros": "zeros", "border": "border", "reflection": "reflection"}
_EPS = 1e-7


@dataclass(frozen=True)
class Normalizer:
    """Per-channel (x - mean) / std on the [0, 1] scale."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _stats(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Non-blocking copies: a plain torch.tensor(..., device=cuda) waits for the kernels already queued.
        mean = torch.tensor(self.mean, dtype=images.dtype).to(images.device, non_blocking=True).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype).to(images.device, non_blocking=True).view(1, -1, 1, 1)
        if images.shape[1] == 1 and mean.shape[1] == 3:  # grey input with RGB statistics: their averages
            mean, std = mean.mean(dim=1, keepdim=True), std.mean(dim=1, keepdim=True)
        return mean, std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(images)
        return (images - mean) / std

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(images)
        return images * std + mean


IMAGENET = Normalizer((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class BatchGeometry:
    """The sampling map one batch was resampled with, in normalized coordinates: an output location q reads
    the input at homography(matrices q). `homography` is None when no warp was applied."""

    matrices: torch.Tensor  # (N, 3, 3)
    homography: torch.Tensor | None = None

    def to_input(self, points: torch.Tensor) -> torch.Tensor:
        """Points (N, P, 2) in the output frame -> where they are in the input (the sampling map itself)."""
        mapped = apply_homography(self.matrices.to(points.dtype), points)
        return apply_homography(self.homography.to(points.dtype), mapped) if self.homography is not None else mapped

    def to_output(self, points: torch.Tensor) -> torch.Tensor:
        """Points (N, P, 2) of the input -> the output frame (how point targets are moved)."""
        return transform_points(points, self.matrices, self.homography)

    @staticmethod
    def identity(n: int, device: torch.device | None = None) -> BatchGeometry:
        return BatchGeometry(torch.eye(3, device=device).repeat(n, 1, 1))

    def cpu(self) -> BatchGeometry:
        homography = self.homography.cpu() if self.homography is not None else None
        return BatchGeometry(self.matrices.cpu(), homography)

    def select(self, positions: torch.Tensor) -> BatchGeometry:
        homography = self.homography[positions] if self.homography is not None else None
        return BatchGeometry(self.matrices[positions], homography)

    @staticmethod
    def cat(parts: Sequence[BatchGeometry]) -> BatchGeometry:
        """One geometry for concatenated batches; a batch without a warp gets the identity homography."""
        if not parts:
            return BatchGeometry(torch.zeros(0, 3, 3))
        matrices = torch.cat([p.matrices for p in parts])
        if all(p.homography is None for p in parts):
            return BatchGeometry(matrices)
        eye = torch.eye(3, dtype=matrices.dtype)
        homographies = [
            p.homography if p.homography is not None else eye.expand(len(p.matrices), 3, 3).to(p.matrices.device)
            for p in parts
        ]
        return BatchGeometry(matrices, torch.cat(homographies))


@dataclass(frozen=True)
class BatchDraws:
    """Every random value of one training batch, drawn before any pixel is touched and always in this order:
    geometry, lighting, policy, erasing. A step that is switched off draws nothing, so adding a later step
    never changes what the earlier ones drew (a spec without a policy gives the batches it gave before)."""

    geometry: GeometryParams
    lighting: torch.Tensor | None = None  # (N, 4) uniforms
    policy: PolicyDraws | None = None
    erasing: ErasingDraws | None = None


def logit(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(_EPS, 1 - _EPS)
    return torch.log(x / (1 - x))


@dataclass(frozen=True)
class BatchAugment:
    """fastai's aug_transforms(size=...) + Normalize, fused, with the spec's policy and random erasing on
    training batches. `size` is (height, width); None keeps the input's."""

    spec: AugmentSpec
    size: tuple[int, int] | None = None
    normalizer: Normalizer | None = None
    # 1: grey batches for a model built with n_in 1 (ITU-R 601 luma of the RGB images).
    channels: int = 3
    # The regularizers (augment.policy, augment.erasing) are for training batches; TTA turns them off.
    regularize: bool = True

    def with_size(self, size: tuple[int, int] | None) -> BatchAugment:
        return replace(self, size=size)

    def for_tta(self) -> BatchAugment:
        """The training transform without the policy and erasing: TTA views should look like the data, not
        like a regularizer. Its batches are those of a spec without either, for the same generator."""
        return replace(self, regularize=False)

    def with_normalizer(self, normalizer: Normalizer | None) -> BatchAugment:
        return replace(self, normalizer=normalizer)

    def to_display(self, images: torch.Tensor) -> list[np.ndarray]:
        """Outputs of this transform (normalized float NCHW) -> uint8 pictures: HWC, or HW for grey inputs, so
        that a grey model's images are drawn grey, never in a colormap."""
        if self.normalizer is not None:
            images = self.normalizer.denormalize(images)
        pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [p[..., 0] if p.shape[-1] == 1 else p for p in pixels]

    def __call__(
        self,
        images: torch.Tensor,
        points: torch.Tensor | None = None,
        *,
        train: bool,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment (train) or just resize (valid) a uint8 (N, C, H, W) batch; points (N, P, 2) follow."""
        x, points, _ = self.with_geometry(images, points, train=train, generator=generator)
        return x, points

    def with_geometry(
        self,
        images: torch.Tensor,
        points: torch.Tensor | None = None,
        *,
        train: bool,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, BatchGeometry]:
        """As calling the transform (the same draws from `generator`), and the geometry each image got, so that
        predictions made in the output frame can be mapped back to the input frame (TTA of point models)."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected a uint8 (N, C, H, W) batch, got {images.dtype} {tuple(images.shape)}")
        n, channels, height, width = images.shape
        augment = train and self.spec.enabled
        draws = self.draw_batch((n, channels, height, width), images.device, generator) if augment else None
        return self.apply(images, points, draws)

    def draw_batch(
        self, shape: tuple[int, int, int, int], device: torch.device, generator: torch.Generator | None
    ) -> BatchDraws:
        """Every draw a training batch of uint8 `shape` (N, C, H, W) needs, in BatchDraws' order."""
        n, channels, height, width = shape
        out_size = self.size or (height, width)
        geometry = self.draw(n, device, generator)
        lighting = self.draw_lighting(n, device, generator) if self.spec.max_lighting > 0 else None
        policy: PolicyDraws | None = None
        erasing: ErasingDraws | None = None
        if self.regularize and self.spec.policy is not None:
            policy = draw_policy(self.spec.policy, n, out_size, device, generator)
        if self.regularize and self.spec.erasing is not None:
            out_channels = 1 if self.channels == 1 and channels == 3 else channels
            erasing = draw_erasing(self.spec.erasing, (n, out_channels, *out_size), device, generator)
        return BatchDraws(geometry, lighting, policy, erasing)

    def apply(
        self, images: torch.Tensor, points: torch.Tensor | None = None, draws: BatchDraws | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, BatchGeometry]:
        """The transform with the given draws (None: the validation transform), the steps in BatchDraws' order."""
        x = images.float().div_(255.0)
        if draws is None:
            x, points, geometry = self._resample(x, points, self.identity(x.shape[0], x.device), False)
        else:
            params = draws.geometry
            if draws.policy is not None:
                params = replace(params, policy=policy_matrices(draws.policy, self.size or (x.shape[2], x.shape[3])))
            x, points, geometry = self._resample(x, points, params, True)
            if draws.lighting is not None:
                x = self.light(x, draws.lighting)
            if draws.policy is not None:
                # The policy's colour ops run after the one resample, not in their place among its geometric
                # ops (trivial_augment has one op per image, so this reorders only rand_augment's sequences).
                # That is acceptable: brightness, colour and contrast are affine in the pixel values and commute
                # with bilinear resampling up to their clipping to [0, 1]; the clipping, posterize and solarize
                # are pointwise and differ only where a sample falls between source pixels of different values
                # (along edges). The margins a rotation, shear or translation uncovers are filled by pad_mode
                # before the colour ops instead of with black after them. Contrast's mean, autocontrast,
                # equalize and sharpness read the whole image: here the output frame the model sees, as when
                # torchvision's policies follow a RandomResizedCrop.
                x = apply_colour_ops(x, draws.policy)
        if self.channels == 1 and x.shape[1] == 3:
            luma = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).to(x.device, non_blocking=True).view(1, 3, 1, 1)
            x = (x * luma).sum(dim=1, keepdim=True)
        if self.normalizer is not None:
            x = self.normalizer(x)
        if draws is not None and draws.erasing is not None:
            x = erase(x, draws.erasing)  # timm's order: after normalization, so 0 and N(0, 1) are data-like
        return x, points, geometry

    # --- geometry ---------------------------------------------------------------------------------------

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> GeometryParams:
        """Independent per-image draws, all from one call to the generator."""
        spec, mult = self.spec, self.spec.mult
        u = torch.rand(n, 15, device=device, generator=generator)
        # Rotation, zoom and each warp direction are switched on independently with p_affine, as in fastai.
        on = u[:, 0:4] < spec.p_affine
        if spec.flip_vert:
            flip = torch.where(u[:, 4] < 0.5, (u[:, 5] * 8).floor().clamp(max=7), 0.0)
        else:
            flip = torch.where((u[:, 4] < 0.5) & spec.do_flip, -1.0, 1.0)
        angle = (2 * u[:, 6] - 1) * spec.max_rotate * mult * on[:, 0]
        zoom = torch.where(on[:, 1], spec.min_zoom + u[:, 7] * (spec.max_zoom - spec.min_zoom), 1.0)
        warp = spec.max_warp * mult
        # A square crop of min_scale..1 of the area (fastai's RandomResizedCropGPU with ratio (1, 1)), per image.
        crop = torch.sqrt(spec.min_scale + u[:, 12] * (1 - spec.min_scale))
        return GeometryParams(
            flip=flip,
            angle=angle,
            zoom=zoom,
            zoom_x=u[:, 8],
            zoom_y=u[:, 9],
            crop=crop,
            crop_x=u[:, 13],
            crop_y=u[:, 14],
            warp_x=(2 * u[:, 10] - 1) * warp * on[:, 2],
            warp_y=(2 * u[:, 11] - 1) * warp * on[:, 3],
        )

    def identity(self, n: int, device: torch.device) -> GeometryParams:
        zeros, ones = torch.zeros(n, device=device), torch.ones(n, device=device)
        halves = torch.full((n,), 0.5, device=device)
        flip = zeros if self.spec.flip_vert else ones
        return GeometryParams(flip, zeros, ones, halves, halves, ones, halves, halves, zeros, zeros)

    def _resample(
        self, x: torch.Tensor, points: torch.Tensor | None, params: GeometryParams, augment: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, BatchGeometry]:
        in_size = (x.shape[2], x.shape[3])
        out_size = self.size or in_size
        square = in_size[0] == in_size[1]
        # Decided from the spec, not the drawn values, so that the device never waits for the host.
        if not augment and (square or self.spec.min_scale == 1):
            # Validation without a crop is a plain resize: F.interpolate takes the same bilinear samples at the
            # same half-pixel centres as grid_sample on an identity grid, without building the grid (~20x less
            # work), and points keep their normalized coordinates.
            identity = BatchGeometry.identity(x.shape[0], x.device)
            if out_size != in_size:
                x = F.interpolate(self._antialias(x, out_size), size=out_size, mode="bilinear", align_corners=False)
            return x, points, identity
        matrices = affine_matrices(params, in_size, self.spec.flip_vert, square_crop=self.spec.min_scale < 1)
        homography = warp_coefficients(params.warp_x, params.warp_y) if augment and self.spec.max_warp > 0 else None
        if points is not None:
            points = transform_points(points, matrices, homography)
        grid = sampling_grid(matrices, out_size, homography)
        x = self._antialias(x, out_size)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode=_GRID_PADDING[self.spec.pad_mode], align_corners=False)
        return x, points, BatchGeometry(matrices, homography)

    @staticmethod
    def _antialias(x: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """Area-downsample to twice the output size first when the output is under a third of the input:
        bilinear sampling reads 2x2 source pixels per output pixel, which averages every pixel up to a 2x
        downscale (and nearly so to 3x) but skips pixels beyond, and aliases. Decided from the sizes alone, so
        that no batch statistic has to be read back from the device. (460 -> 224, the book's recipe, needs no
        pre-pass: it cost half the augmentation time for no visible change, BENCHMARKS.md.)"""
        factor = min(x.shape[2] / out_size[0], x.shape[3] / out_size[1]) / 2
        if factor > 1.5:
            size = (max(1, math.floor(x.shape[2] / factor)), max(1, math.floor(x.shape[3] / factor)))
            return F.interpolate(x, size=size, mode="area")
        return x

    # --- lighting ---------------------------------------------------------------------------------------

    def lighting(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Brightness then contrast, per image, in logit space: sigmoid(c * (logit(x) + logit(b)))."""
        return self.light(x, self.draw_lighting(x.shape[0], x.device, generator))

    @staticmethod
    def draw_lighting(n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        return torch.rand(n, 4, device=device, generator=generator)

    def light(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Lighting with its draws `u` (N, 4): whether and how much brightness, whether and how much contrast."""
        n, light = x.shape[0], self.spec.max_lighting * self.spec.mult
        brightness = torch.where(u[:, 0] < self.spec.p_lighting, 0.5 * (1 - light) + u[:, 1] * light, 0.5)
        log_c = math.log(1 - min(light, 0.999))
        contrast = torch.where(u[:, 2] < self.spec.p_lighting, torch.exp(log_c + u[:, 3] * (-2 * log_c)), 1.0)
        shift = logit(brightness).view(n, 1, 1, 1)
        return torch.sigmoid((logit(x) + shift) * contrast.view(n, 1, 1, 1))
