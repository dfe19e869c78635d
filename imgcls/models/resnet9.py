"""ResNet-9 for small images (28-32 px), after Myrtle.ai's DAWNBench CIFAR-10 network (David Page, 2018):
prep conv, then three downsampling stages (conv, batch norm, ReLU, 2x2 max pool), a residual block after the
first and the last. At 28 px the last feature map is 3x3. A forward pass of one grey 28 px image is 0.55 GFLOP
with `width` 64 (the original), 0.14 with 32, 0.077 with 24 and 0.034 with 16 (torch's FlopCounterMode, two
FLOPs per multiply-add; xresnet18 is 0.077 at 28 px)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _conv_bn(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(n_in, n_out, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(n_out), nn.ReLU(inplace=True)
    )


class _Residual(nn.Module):
    """x + two conv-bn-relu blocks of x."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)  # type: ignore[no-any-return]


class ResNet9(nn.Module):
    """The body: a feature map of 8 * width channels at 1/8 of the input's size (the head pools it)."""

    def __init__(self, in_chans: int = 3, width: int = 64, **_: Any) -> None:
        super().__init__()
        w = width
        self.prep = _conv_bn(in_chans, w)
        self.layer1 = nn.Sequential(_conv_bn(w, 2 * w), nn.MaxPool2d(2), _Residual(2 * w))
        self.layer2 = nn.Sequential(_conv_bn(2 * w, 4 * w), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(_conv_bn(4 * w, 8 * w), nn.MaxPool2d(2), _Residual(8 * w))
        self.num_features = 8 * w
        # timm's convention: the model's parameter groups cut before the first stage at reduction >= 16; this net
        # stops at 8, so the groups split its parameters in half (imgcls.models.factory._split_body).
        self.feature_info = [
            {"module": "prep", "reduction": 1, "num_chs": w},
            {"module": "layer1", "reduction": 2, "num_chs": 2 * w},
            {"module": "layer2", "reduction": 4, "num_chs": 4 * w},
            {"module": "layer3", "reduction": 8, "num_chs": 8 * w},
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(self.prep(x))))  # type: ignore[no-any-return]


def resnet9(num_classes: int = 0, global_pool: str = "", in_chans: int = 3, width: int = 64, **kwargs: Any) -> ResNet9:
    """The registry's builder: num_classes and global_pool are the head's business (always 0 and '' here)."""
    if num_classes or global_pool:
        raise ValueError("resnet9 is built as a body: the head adds pooling and the classifier")
    return ResNet9(in_chans, width, **kwargs)
