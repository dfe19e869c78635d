"""Gradient accumulation and clipping."""

from __future__ import annotations

from typing import Any

import torch

from imgcls.train.callbacks.base import Callback
from imgcls.train.state import TrainState


class GradientAccumulation(Callback):
    """Step once `n_acc` samples have been seen; each batch's loss is scaled by bs / n_acc so the summed
    gradient is that of one batch of n_acc (fastai counts samples, not batches)."""

    name = "gradient_accumulation"
    order = 30
    shapes_training = True

    def __init__(self, n_acc: int = 32) -> None:
        self.n_acc = n_acc
        self.count = 0

    def on_batch_start(self, state: TrainState) -> None:
        bs = state.xb.shape[0]
        state.loss_factor = bs / self.n_acc
        self.count += bs
        state.skip_step = self.count < self.n_acc
        if not state.skip_step:
            self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])


class GradientClip(Callback):
    """Clip the gradient norm before each step (after fp16 unscaling)."""

    name = "gradient_clip"
    order = 40
    shapes_training = True

    def __init__(self, max_norm: float = 1.0, norm_type: float = 2.0) -> None:
        self.max_norm, self.norm_type = max_norm, norm_type

    def on_before_step(self, state: TrainState) -> None:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), self.max_norm, self.norm_type)
