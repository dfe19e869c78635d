"""MixUp and CutMix: blend images and their targets. The losses take soft targets, and because every loss
used for classification is linear in its target, mixing targets equals fastai's mixing of losses."""

from __future__ import annotations

import numpy as np
import torch

from imgcls.train.callbacks.base import Callback
from imgcls.train.state import TrainState


def _blend(targets: torch.Tensor, permutation: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (targets.ndim - 1)
    return torch.lerp(targets[permutation], targets, lam.view(shape))


class MixUp(Callback):
    """Per item: lambda ~ Beta(alpha, alpha), kept >= 0.5; x = lerp(x[perm], x, lambda), targets alike."""

    name = "mixup"
    order = 20
    shapes_training = True

    def __init__(self, alpha: float = 0.4) -> None:
        self.alpha = alpha

    def on_batch_start(self, state: TrainState) -> None:
        rng = np.random.default_rng([state.batch_seed, 20])
        n = state.xb.shape[0]
        lam_np = rng.beta(self.alpha, self.alpha, size=n)
        lam = torch.as_tensor(np.maximum(lam_np, 1 - lam_np), dtype=torch.float32).to(state.xb.device)
        permutation = torch.as_tensor(rng.permutation(n)).to(state.xb.device)
        state.xb = torch.lerp(state.xb[permutation], state.xb, lam.view(-1, 1, 1, 1).to(state.xb.dtype))
        state.yb = _blend(state.target.soft_targets(state.yb), permutation, lam)


class CutMix(Callback):
    """One lambda ~ Beta(alpha, alpha) per batch: paste a box of the permuted batch, side sqrt(1 - lambda),
    centred at a uniform random pixel and clamped to the image; lambda becomes the unpasted share of pixels."""

    name = "cutmix"
    order = 20
    shapes_training = True

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def on_batch_start(self, state: TrainState) -> None:
        rng = np.random.default_rng([state.batch_seed, 21])
        n, _, height, width = state.xb.shape
        lam = float(rng.beta(self.alpha, self.alpha))
        cut = np.sqrt(1.0 - lam)
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        half_w, half_h = int(width * cut) // 2, int(height * cut) // 2
        x0, x1 = max(cx - half_w, 0), min(cx + half_w, width)
        y0, y1 = max(cy - half_h, 0), min(cy + half_h, height)
        permutation = torch.as_tensor(rng.permutation(n)).to(state.xb.device)
        mixed = state.xb.clone()
        mixed[:, :, y0:y1, x0:x1] = state.xb[permutation][:, :, y0:y1, x0:x1]
        state.xb = mixed
        kept = 1.0 - (x1 - x0) * (y1 - y0) / (width * height)
        state.yb = _blend(
            state.target.soft_targets(state.yb), permutation, torch.full((n,), kept, device=state.xb.device)
        )
