"""`data.decode: device`, the device's half: decode a batch of JPEGs where training runs (nvjpeg on CUDA,
libjpeg-turbo on the CPU, through the same torchvision call) and cut each item's planned window out of it.

The cut and resize is PIL's BILINEAR resample with a box, as the PIL path does it (item_tfms.apply_window),
written as two matrix products per image: out = Wy @ image @ Wx^T. Each row of W holds the triangle filter of one
output pixel, widened by the downscale factor (so large downscales are antialiased, as in PIL) and renormalised
at the image's edges; fractional window edges are exact. `pad` windows extend beyond the image: their margins
are rows of W copied (border, reflection) or zeroed (zeros) as np.pad copies pixels in the PIL path.

Against the PIL path on the same decoded pixels the result differs by at most 1 grey level (PIL rounds to 8
bits between its two passes). Whole batches differ a little more where PIL decodes a JPEG at a reduced DCT
scale first (a window more than twice the output size): tests/train/test_source.py states the measured figures.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from imgcls.augment.loader import BatchOptions, DeviceBatch, _AugmentingSource
from imgcls.augment.pipeline import BatchAugment
from imgcls.data.dataset import BadItem
from imgcls.data.encoded import EncodedBatch, decode_window
from imgcls.data.item_tfms import Window
from imgcls.data.loaders import Batch, EpochBatchSampler, FixedBatchSampler, check_batch
from imgcls.errors import DataError, ImageReadError

_PAD_CODES = {"zeros": 0, "border": 1, "reflection": 2}
# Images resampled in one pair of batched products are padded to the largest of them: at most this many
# elements (3 channels x height x width x images), 2**26 = 128 MiB in fp16, before the batch is split.
_CHUNK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class AxisPlan:
    """One axis of one window: the source interval [lo, hi) (source pixels, inside the image) becomes `inner`
    output pixels starting at `offset`; the output's other pixels are padding."""

    lo: float
    hi: float
    inner: int
    offset: int


def plan_axes(window: Window, size: tuple[int, int]) -> tuple[AxisPlan, AxisPlan]:
    """(x, y) plans of `window` on a decoded image of `size` (width, height): item_tfms.apply_window's arithmetic,
    including its rounding of the padded part."""
    left, top, right, bottom = window.box
    out_w, out_h = window.out
    inner = (max(left, 0.0), max(top, 0.0), min(right, float(size[0])), min(bottom, float(size[1])))
    if window.inside(size):
        return AxisPlan(inner[0], inner[2], out_w, 0), AxisPlan(inner[1], inner[3], out_h, 0)
    per_x, per_y = out_w / (right - left), out_h / (bottom - top)
    x0 = min(max(round((inner[0] - left) * per_x), 0), out_w - 1)
    y0 = min(max(round((inner[1] - top) * per_y), 0), out_h - 1)
    x1 = max(min(round((inner[2] - left) * per_x), out_w), x0 + 1)
    y1 = max(min(round((inner[3] - top) * per_y), out_h), y0 + 1)
    return AxisPlan(inner[0], inner[2], x1 - x0, x0), AxisPlan(inner[1], inner[3], y1 - y0, y0)


def _padded_index(k: torch.Tensor, n: torch.Tensor, mode: torch.Tensor) -> torch.Tensor:
    """Index into the `n` resampled pixels that output position `k` (relative to the first of them) copies, as
    np.pad's constant (any index: the row is zeroed later), edge and reflect modes pick it."""
    last = n - 1
    edge = torch.minimum(k.clamp(min=0), last)
    period = (2 * last).clamp(min=1)
    folded = k.remainder(period)
    reflected = torch.where(folded > last, period - folded, folded)
    reflected = torch.where(n == 1, torch.zeros_like(k), reflected)
    return torch.where(mode == _PAD_CODES["reflection"], reflected, edge)


def _values(values: Sequence[float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small tensor on `device` by a non-blocking copy: torch.tensor(..., device=cuda) would wait for every kernel
    already queued (the previous training step) and so stop the host from preparing the next batch meanwhile."""
    return torch.tensor(list(values), dtype=dtype).to(device, non_blocking=True)


def axis_weights(
    plans: Sequence[AxisPlan], in_lengths: Sequence[int], out: int, length: int, modes: torch.Tensor
) -> torch.Tensor:
    """(N, out, length) float32 weights of one axis for N images; columns at or beyond an image's own length are
    zero, so images of different sizes can share one padded batch. `modes` holds each window's pad-mode code."""
    device, real = modes.device, torch.float32
    lo = _values([p.lo for p in plans], real, device)
    hi = _values([p.hi for p in plans], real, device)
    inner = _values([p.inner for p in plans], torch.int64, device)
    offset = _values([p.offset for p in plans], torch.int64, device)
    in_len = _values(in_lengths, real, device)
    k = torch.arange(out, device=device)[None, :] - offset[:, None]  # (N, out)
    inside = (k >= 0) & (k < inner[:, None])
    source = _padded_index(k, inner[:, None], modes[:, None])
    kept = inside | (modes[:, None] != _PAD_CODES["zeros"])
    # PIL's coefficients for its bilinear filter (support 1 px, widened by the downscale factor), in float32:
    # centres up to 2**13 px are then exact to 1e-3 px.
    scale = (hi - lo) / inner
    filter_scale = scale.clamp(min=1.0)[:, None]
    centre = lo[:, None] + (source + 0.5) * scale[:, None]  # (N, out)
    first = torch.floor(centre - filter_scale + 0.5).clamp(min=0.0)
    end = torch.minimum(torch.floor(centre + filter_scale + 0.5), in_len[:, None])
    x = torch.arange(length, device=device, dtype=real)[None, None, :]
    taps = (1.0 - ((x + 0.5 - centre[..., None]) / filter_scale[..., None]).abs()).clamp(min=0.0)
    taps = taps * ((x >= first[..., None]) & (x < end[..., None]))
    taps = taps / taps.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    return taps * kept[..., None]


def _compute_dtype(device: torch.device) -> torch.dtype:
    # fp16 on CUDA: pixel values 0..255 are exact in fp16 and the weights carry 11 significant bits, so each output
    # is within ~0.2 grey levels of the fp32 result, on tensor cores (about 10x the fp32 rate).
    return torch.float16 if device.type == "cuda" else torch.float32


def _chunks(sizes: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Image numbers grouped by area so that each group, padded to its largest image, stays under the budget."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i][0] * sizes[i][1])
    groups: list[list[int]] = []
    current: list[int] = []
    width = height = 0  # the largest width and height in `current`, kept as it grows (not re-scanned per image)
    for number in order:
        wide, tall = max(width, sizes[number][0]), max(height, sizes[number][1])
        if current and 3 * wide * tall * (len(current) + 1) > _CHUNK_ELEMENTS:
            groups.append(current)
            current, (wide, tall) = [], sizes[number]
        current.append(number)
        width, height = wide, tall
    if current:
        groups.append(current)
    return groups


def cut_windows(pictures: Sequence[torch.Tensor], windows: Sequence[Window], out_size: tuple[int, int]) -> torch.Tensor:
    """Decoded (3, H, W) uint8 images (one device) and their windows -> (N, 3, out_h, out_w) uint8."""
    device = pictures[0].device
    out_h, out_w = out_size
    result = torch.empty((len(pictures), 3, out_h, out_w), dtype=torch.uint8, device=device)
    sizes = [(int(p.shape[2]), int(p.shape[1])) for p in pictures]
    dtype = _compute_dtype(device)
    for group in _chunks(sizes):
        width, height = max(sizes[i][0] for i in group), max(sizes[i][1] for i in group)
        batch = torch.zeros((len(group), 3, height, width), dtype=dtype, device=device)
        for slot, number in enumerate(group):
            picture = pictures[number]
            batch[slot, :, : picture.shape[1], : picture.shape[2]] = picture
        plans = [plan_axes(windows[i], sizes[i]) for i in group]
        modes = _values([_PAD_CODES[windows[i].pad_mode] for i in group], torch.int64, device)
        wx = axis_weights([p[0] for p in plans], [sizes[i][0] for i in group], out_w, width, modes).to(dtype)
        wy = axis_weights([p[1] for p in plans], [sizes[i][1] for i in group], out_h, height, modes).to(dtype)
        resampled = (wy[:, None] @ batch) @ wx.transpose(1, 2)[:, None]
        # PIL rounds half up and clips to 0..255.
        pixels = (resampled.float() + 0.5).floor_().clamp_(0, 255).to(torch.uint8)
        result[_values(group, torch.int64, device)] = pixels
    return result


def decode_jpegs(files: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Each file decoded to (3, H, W) uint8 on `device`, all in one call; when the call fails, each file on its
    own, None for those that fail."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of torchcodec; the call still works.
        warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
        try:
            return list(decode_jpeg(list(files), mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass
        decoded: list[torch.Tensor | None] = []
        for file in files:
            try:
                decoded.append(decode_jpeg(file, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
        return decoded


def check_decoder(device: torch.device) -> None:
    """Decode one tiny JPEG on `device`, so that a torchvision without a decoder there (no nvJPEG) stops the run
    at once with what to do, instead of sending every file through the PIL fallback in the training process."""
    import io

    from PIL import Image

    stream = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(stream, format="JPEG")
    probe = torch.frombuffer(bytearray(stream.getvalue()), dtype=torch.uint8)
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
            decode_jpeg(probe, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as err:
        raise DataError(
            f"data.decode: device cannot decode JPEGs on {device}: {err}",
            hint="install a torchvision built with nvJPEG (the PyPI CUDA wheels are), or set data.decode: pil",
        ) from None


def _whole(picture: torch.Tensor | None, size: tuple[int, int]) -> bool:
    return picture is not None and (int(picture.shape[2]), int(picture.shape[1])) == size


def _encoded_items(batch: EncodedBatch, device: torch.device) -> tuple[torch.Tensor, list[int], list[BadItem]]:
    """The encoded files of `batch`, decoded and cut to their windows: (n, 3, H, W) uint8 on `device`, the numbers
    (into batch.rows) of the files they are, and the files that could not be read at all.

    A file the device decoder rejects (or decodes to another size than its header's) is read by the PIL path
    in this process instead; only a file PIL cannot read either is bad.
    """
    height, width = batch.out_size
    pictures = decode_jpegs(batch.files(), device)
    ready: dict[int, torch.Tensor] = {}
    bad: dict[int, BadItem] = {}
    for number, picture in enumerate(pictures):
        if _whole(picture, batch.sizes[number]):
            continue
        try:
            pixels = decode_window(batch.paths[number], batch.windows[number])
        except ImageReadError as err:
            bad[number] = BadItem(int(batch.indices[int(batch.rows[number])]), err.path, err.reason)
            continue
        ready[number] = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).to(device, non_blocking=True)
    good = [n for n in range(len(pictures)) if n not in bad]
    out = torch.empty((len(pictures), 3, height, width), dtype=torch.uint8, device=device)
    to_cut = [n for n in good if n not in ready]
    if to_cut:
        whole = [p for n in to_cut if (p := pictures[n]) is not None]  # every one: _whole() checked them
        windows = [w for n in to_cut if (w := batch.windows[n]) is not None]
        # Without an item transform the images are used as they are (the collate checked their sizes).
        cut = cut_windows(whole, windows, (height, width)) if windows else torch.stack(whole)
        out[_values(to_cut, torch.int64, device)] = cut
    for number, picture in ready.items():
        out[number] = picture
    return out[_values(good, torch.int64, device)], good, list(bad.values())


def decode_batch(
    batch: EncodedBatch, device: torch.device, on_bad_image: str, skipped: list[BadItem]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An EncodedBatch -> uint8 (N, 3, H, W) images and targets on `device`, and the item indices (CPU), in the
    batch's order. A file that cannot be read is reported as on the PIL path (check_batch: an error naming it,
    or left out and recorded in `skipped` under on_bad_image: skip)."""
    height, width = batch.out_size
    images = torch.empty((len(batch), 3, height, width), dtype=torch.uint8, device=device)
    keep = torch.ones(len(batch), dtype=torch.bool)
    if len(batch.rows):
        pixels, good, bad = _encoded_items(batch, device)
        check_batch(Batch(images[:0], batch.targets[:0], batch.indices[:0], bad), on_bad_image, skipped)
        keep[batch.rows] = False
        keep[batch.rows[good]] = True
        if good:
            images[batch.rows[good].to(device, non_blocking=True)] = pixels
    if len(batch.decoded):
        others = torch.ones(len(batch), dtype=torch.bool)
        others[batch.rows] = False
        rows = others.nonzero().squeeze(1).to(device, non_blocking=True)
        images[rows] = batch.decoded.images.to(device, non_blocking=device.type == "cuda")
    targets = batch.targets.to(device, non_blocking=device.type == "cuda")
    if bool(keep.all()):
        return images, targets, batch.indices
    kept = keep.nonzero().squeeze(1)
    on_device = kept.to(device, non_blocking=True)
    return images[on_device], targets[on_device], batch.indices[kept]


class DecodingLoader(_AugmentingSource):
    """Iterates a DataLoader of EncodedBatches, decodes each on `device`, and yields augmented DeviceBatches, in
    the order (and with the per-batch seeds) a DeviceLoader would."""

    def __init__(
        self,
        loader: DataLoader[EncodedBatch],
        sampler: EpochBatchSampler | FixedBatchSampler,
        augment: BatchAugment,
        device: torch.device,
        options: BatchOptions,
        on_bad_image: str = "error",
    ) -> None:
        super().__init__(sampler, augment, device, options)
        self.loader, self.on_bad_image = loader, on_bad_image
        self.skipped: list[BadItem] = []
        check_decoder(device)

    def __iter__(self) -> Iterator[DeviceBatch]:
        for number, batch in enumerate(self.loader, start=self.sampler.start_batch):
            check_batch(batch.decoded, self.on_bad_image, self.skipped)
            if not len(batch):
                continue
            images, targets, indices = decode_batch(batch, self.device, self.on_bad_image, self.skipped)
            if len(indices):
                yield self.augmented(images, targets, indices, number)
