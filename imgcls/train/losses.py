"""Losses, chosen by the target block unless the spec names one. All accept soft targets (MixUp)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

from imgcls.registry import Registry
from imgcls.spec.train import LossSpec
from imgcls.targets import Target

# (1 - p)^gamma has an infinite derivative at p = 1 for gamma < 1; below this floor the term is ~0 anyway.
_FOCAL_FLOOR = 1e-12


@functools.lru_cache(maxsize=16)
def _weight_tensor(weights: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """The weights on `device`, made once: a tensor built from a list at every step is a blocking host-to-device
    copy on CUDA."""
    return torch.tensor(weights, dtype=torch.float32, device=device)


@dataclass(frozen=True)
class Loss:
    """`per_item(preds, targets)` is one loss per item; calling the loss gives their mean.

    Targets: class indices (N,) or class probabilities (N, C) for cross-entropy; (N, C) floats for BCE; any
    shape with N items for regression (points (N, P, 2) against outputs (N, 2P)).

    `weights` (one per output): per-class weights of the softmax losses (an item of class c counts w_c), or the
    positive-term weights of the sigmoid ones (torch's pos_weight). `focal` over softmax or sigmoid outputs, as
    `activation` says, scales each term by (1 - p)^gamma (Lin et al., 2017), written linearly in the targets, so
    that MixUp's mixed targets still give mixed losses; `alpha` weights a sigmoid focal loss's positive terms
    (alpha) against its negative ones (1 - alpha).
    """

    name: str
    eps: float = 0.0
    weights: tuple[float, ...] | None = None
    gamma: float = 0.0
    alpha: float | None = None
    activation: str = "softmax"

    def _weights(self, preds: torch.Tensor) -> torch.Tensor | None:
        return None if self.weights is None else _weight_tensor(self.weights, preds.device)

    def per_item(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return PER_ITEM.get(self.name)(self, preds.float(), targets)

    def _softmax_focal(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """-sum_c y_c w_c (1 - p_c)^gamma log p_c: for a one-hot y, -w_t (1 - p_t)^gamma log p_t."""
        log_p = F.log_softmax(preds, dim=-1)
        soft = targets.float() if targets.ndim == 2 else F.one_hot(targets.long(), preds.shape[-1]).float()
        modulating = (-torch.expm1(log_p)).clamp(min=_FOCAL_FLOOR).pow(self.gamma)  # 1 - p, exact near p = 1
        terms = soft * modulating * log_p
        weight = self._weights(preds)
        if weight is not None:
            terms = terms * weight
        return -terms.sum(dim=-1)

    def _sigmoid_focal(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per label: -[a w y (1 - p)^gamma log p + (1 - a) (1 - y) p^gamma log(1 - p)], averaged over labels."""
        log_p, log_q = F.logsigmoid(preds), F.logsigmoid(-preds)  # log p and log(1 - p), both stable
        positive = targets * log_q.exp().clamp(min=_FOCAL_FLOOR).pow(self.gamma) * log_p
        negative = (1 - targets) * log_p.exp().clamp(min=_FOCAL_FLOOR).pow(self.gamma) * log_q
        pos_weight = self._weights(preds)
        if pos_weight is not None:
            positive = positive * pos_weight
        if self.alpha is not None:
            positive, negative = self.alpha * positive, (1 - self.alpha) * negative
        return -(positive + negative).mean(dim=1)

    def __call__(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.per_item(preds, targets).mean()


def _cross_entropy(loss: Loss, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # Cross-entropy is linear in the target distribution, so MixUp's mixed one-hot targets give exactly fastai's
    # mixed losses, and label smoothing (eps/C everywhere, 1-eps on the class) composes with it.
    weight = loss._weights(preds)
    return F.cross_entropy(preds, targets, weight=weight, reduction="none", label_smoothing=loss.eps)


def _focal(loss: Loss, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if loss.activation == "sigmoid":
        return loss._sigmoid_focal(preds, targets.reshape(preds.shape).float())
    return loss._softmax_focal(preds, targets)


def _bce(loss: Loss, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    flat = targets.reshape(preds.shape).float()
    pos_weight = loss._weights(preds)
    return F.binary_cross_entropy_with_logits(preds, flat, pos_weight=pos_weight, reduction="none").mean(dim=1)


def _l1(loss: Loss, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(preds, targets.reshape(preds.shape).float(), reduction="none").mean(dim=1)


def _mse(loss: Loss, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(preds, targets.reshape(preds.shape).float(), reduction="none").mean(dim=1)


# One loss per item, by the loss's YAML name (LossSpec.name; a test keeps the two lists equal).
PER_ITEM: Registry[Callable[[Loss, torch.Tensor, torch.Tensor], torch.Tensor]] = Registry(
    "loss",
    {
        "cross_entropy": _cross_entropy,
        "label_smoothing_cross_entropy": _cross_entropy,
        "focal": _focal,
        "bce_with_logits": _bce,
        "l1": _l1,
        "mse": _mse,
    },
)


def build_loss(spec: LossSpec, target: Target | type[Target], weights: list[float] | None = None) -> Loss:
    """The spec's loss, or (auto) the target block's default; `weights` are the resolved class_weights or
    pos_weight (imgcls.train.builder.Pipeline.loss_weights)."""
    name = target.default_loss if spec.name == "auto" else spec.name
    eps = spec.eps if name == "label_smoothing_cross_entropy" else 0.0
    focal = name == "focal"
    return Loss(
        name,
        eps,
        weights=tuple(weights) if weights is not None else None,
        gamma=spec.gamma if focal else 0.0,
        alpha=spec.alpha if focal else None,
        activation=target.activation_name,
    )
