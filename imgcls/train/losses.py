"""Losses, chosen by the target block unless the spec names one. All accept soft targets (MixUp)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

from imgcls.spec.train import LossSpec
from imgcls.targets import Target


@dataclass(frozen=True)
class Loss:
    """`per_item(preds, targets)` is one loss per item; calling the loss gives their mean.

    Targets: class indices (N,) or class probabilities (N, C) for cross-entropy; (N, C) floats for BCE; any
    shape with N items for regression (points (N, P, 2) against outputs (N, 2P)).
    """

    name: str
    eps: float = 0.0

    def per_item(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        preds = preds.float()
        if self.name in ("cross_entropy", "label_smoothing_cross_entropy"):
            # Cross-entropy is linear in the target distribution, so MixUp's mixed one-hot targets give exactly
            # fastai's mixed losses, and label smoothing (eps/C everywhere, 1-eps on the class) composes with it.
            return F.cross_entropy(preds, targets, reduction="none", label_smoothing=self.eps)
        flat_targets = targets.reshape(preds.shape).float()
        if self.name == "bce_with_logits":
            return F.binary_cross_entropy_with_logits(preds, flat_targets, reduction="none").mean(dim=1)
        if self.name == "l1":
            return F.l1_loss(preds, flat_targets, reduction="none").mean(dim=1)
        return F.mse_loss(preds, flat_targets, reduction="none").mean(dim=1)

    def __call__(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.per_item(preds, targets).mean()


def build_loss(spec: LossSpec, target: Target) -> Loss:
    """The spec's loss, or (auto) the target block's default."""
    name = target.default_loss if spec.name == "auto" else spec.name
    eps = spec.eps if name == "label_smoothing_cross_entropy" else 0.0
    return Loss(name, eps)
