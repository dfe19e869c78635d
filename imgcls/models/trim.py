"""Convolutions that leave out the kernel taps which only ever meet zero padding.

A 3x3 convolution with padding 1 on a 1x1 feature map (xresnet18's last stage at 28 px) multiplies eight of its
nine taps by padding: the same outputs and gradients come from a 1x1 convolution with the centre tap, a plain
matrix product. oneDNN's bf16 kernels are slow on such maps (512 -> 512 channels at 1x1, bs 256, forward and
backward: 69 ms in bf16 against 24 ms in fp32 on 2 Xeon cores), and the trimmed convolution takes xresnet18's
bf16 training step at 28 px from 0.99x to 1.35x of fp32's (BENCHMARKS.md §10). On larger maps every tap meets
data and the layer is an ordinary Conv2d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn


def used_taps(size: int, kernel: int, stride: int, padding: int) -> tuple[int, int] | None:
    """The first and last kernel tap (along one axis) that meets the input for some output, or None when all do.

    Output t reads input row t * stride - padding + i for tap i: tap i meets data iff some t in [0, out) puts it
    in [0, size).
    """
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        return None
    first = max(0, padding - (out - 1) * stride)
    last = min(kernel - 1, size - 1 + padding)
    if (first, last) == (0, kernel - 1) or first > last:
        return None
    # The trimmed kernel keeps symmetric padding (padding - first): it must give the same number of outputs.
    trimmed = (size + 2 * (padding - first) - (last - first + 1)) // stride + 1
    return (first, last) if trimmed == out else None


def _exporting() -> bool:
    """Whether torch.export or an ONNX exporter (dynamo or TorchScript) is recording the forward pass."""
    return bool(torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export())


class TrimmedConv2d(nn.Conv2d):
    """A Conv2d (zero padding, no dilation) that convolves with the taps `used_taps` keeps when some fall off."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _exporting():  # a graph must hold for every input size: the full kernel is right for all
            return super().forward(x)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ph, pw = (int(p) for p in self.padding)  # an int pair: trim_padding_taps checks
        rows = used_taps(x.shape[-2], kh, sh, ph)
        cols = used_taps(x.shape[-1], kw, sw, pw)
        if rows is None and cols is None:
            return super().forward(x)
        r0, r1 = rows or (0, kh - 1)
        c0, c1 = cols or (0, kw - 1)
        weight = self.weight[:, :, r0 : r1 + 1, c0 : c1 + 1]
        return F.conv2d(x, weight, self.bias, self.stride, (ph - r0, pw - c0), 1, self.groups)

    @classmethod
    def like(cls, conv: nn.Conv2d) -> TrimmedConv2d:
        """A TrimmedConv2d holding `conv`'s own parameters (the same tensors: optimizer groups stay valid)."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            conv.stride,  # type: ignore[arg-type]
            conv.padding,  # type: ignore[arg-type]
            groups=conv.groups,
            bias=conv.bias is not None,
            device="meta",
        )
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        return new


def _trimmable(module: nn.Module) -> bool:
    if type(module) is not nn.Conv2d:  # subclasses (timm's Conv2dSame, StdConv2d) do their own forward
        return False
    conv: nn.Conv2d = module
    square = conv.kernel_size != (1, 1) and isinstance(conv.padding, tuple)
    return square and conv.dilation == (1, 1) and conv.padding_mode == "zeros"


def trim_padding_taps(model: nn.Module) -> nn.Module:
    """Replace every plain Conv2d of `model` by a TrimmedConv2d with the same parameters; returns `model`.
    The state dict is unchanged (same names, same tensors)."""
    for name, child in model.named_children():
        if _trimmable(child):
            setattr(model, name, TrimmedConv2d.like(child))  # type: ignore[arg-type]
        else:
            trim_padding_taps(child)
    return model
