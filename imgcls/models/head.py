"""fastai's head: concat pooling, then (batch norm, dropout, linear, ReLU) blocks, optional sigmoid range."""

from __future__ import annotations

import torch
from torch import nn

from imgcls.spec.train import HeadSpec


class AdaptiveConcatPool2d(nn.Module):
    """Max and average pooling side by side: twice the features, and the head sees both peaks and means."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.amax(x, dim=(2, 3)), torch.mean(x, dim=(2, 3))], dim=1)


class AdaptiveAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mean(x, dim=(2, 3))


class SigmoidRange(nn.Module):
    """low + (high - low) * sigmoid(x): outputs can approach the range's ends but never leave it."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) * (self.high - self.low) + self.low

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"


def _batch_norm(features: int, momentum: float = 0.1) -> nn.BatchNorm1d:
    norm = nn.BatchNorm1d(features, momentum=momentum)
    # fastai starts head batch-norm biases at 1e-3 rather than 0.
    nn.init.ones_(norm.weight)
    nn.init.constant_(norm.bias, 1e-3)
    return norm


def create_head(n_features: int, n_out: int, spec: HeadSpec, y_range: tuple[float, float] | None) -> nn.Sequential:
    """[pool, flatten] + for each layer: BN, dropout (ps/2, last ps), linear (no bias after BN), ReLU but last."""
    pooled = n_features * 2 if spec.concat_pool else n_features
    widths = [pooled, *(spec.lin_ftrs if spec.lin_ftrs is not None else [512]), n_out]
    dropouts = [spec.ps / 2] * (len(widths) - 2) + [spec.ps]
    layers: list[nn.Module] = [AdaptiveConcatPool2d() if spec.concat_pool else AdaptiveAvgPool()]
    for index, (n_in, n_next, p) in enumerate(zip(widths[:-1], widths[1:], dropouts, strict=True)):
        use_bn = spec.first_bn or index > 0
        if use_bn:
            layers.append(_batch_norm(n_in))
        if p > 0:
            layers.append(nn.Dropout(p))
        linear = nn.Linear(n_in, n_next, bias=not use_bn)
        nn.init.kaiming_normal_(linear.weight)
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if index < len(widths) - 2:
            layers.append(nn.ReLU(inplace=True))
    if spec.bn_final:
        layers.append(_batch_norm(n_out, momentum=0.01))
    if y_range is not None:
        layers.append(SigmoidRange(*y_range))
    return nn.Sequential(*layers)
