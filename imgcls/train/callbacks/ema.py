"""An exponential moving average of the weights, with timm's ModelEmaV3 semantics (decay warm-up, buffers copied).

The average is a copy of the model (every parameter and buffer, on the training device, never trained): after
every `every`-th optimizer step, parameters move to d * ema + (1 - d) * weights and buffers (batch-norm running
statistics) are copied. The k-th update uses d = 0 for k = 1 (the average starts as the trained weights, not the
initial ones), then `decay`, or with `warmup` min(decay, 1 - k^-warmup_power) (timm's warm-up with gamma 1; a
power of 1 averages every update so far equally until it reaches `decay`).

Under DDP every rank keeps its own copy and updates it after the all-reduced step: the parameters are the same on
every rank, so their averages are too; the copied buffers differ per rank like the model's, and the trainer
broadcasts rank 0's before validation, as it does the model's. Rank 0 writes them into the checkpoints.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from imgcls.train.callbacks.base import Callback
from imgcls.train.checkpoint import unwrap
from imgcls.train.state import TrainState


class EMA(Callback):
    """The averaged model (`module`), updated after optimizer steps; validated and checkpointed as `validate` says:
    ema (the averaged weights take the plain columns and the checkpoints), model (only kept in `last`), both
    (its columns get the prefix ema_; `best` holds it when save_best monitors one of them: `best_from_ema`)."""

    name = "ema"
    order = 45

    def __init__(
        self,
        decay: float = 0.9998,
        warmup: bool = False,
        warmup_power: float = 2 / 3,
        every: int = 1,
        validate: str = "ema",
        best_from_ema: bool = False,
    ) -> None:
        self.decay, self.warmup, self.warmup_power, self.every = decay, warmup, warmup_power, every
        self.validate, self.best_from_ema = validate, best_from_ema
        self.module: nn.Module | None = None
        self._pending: dict[str, torch.Tensor] | None = None

    def decay_at(self, update: int) -> float:
        """d of the `update`-th update (1-based): timm's get_decay(step=update) with update_after_step 0."""
        if update <= 1:
            return 0.0
        if not self.warmup:
            return self.decay
        return min(self.decay, 1.0 - math.pow(update, -self.warmup_power))

    def on_fit_start(self, state: TrainState) -> None:
        # Once per run (phases and stages share the average); a resumed run restores the saved one here.
        if self.module is None:
            self.module = copy.deepcopy(unwrap(state.model)).eval().requires_grad_(False)
            if self._pending is not None:
                self.module.load_state_dict(self._pending)
                self._pending = None

    def on_batch_end(self, state: TrainState) -> None:
        step = state.position.step
        if state.skip_step or step % self.every:
            return
        self.update(unwrap(state.model), step // self.every)

    @torch.no_grad()
    def update(self, model: nn.Module, update: int) -> None:
        """Average `model`'s parameters into the copy with the `update`-th decay; copy its buffers."""
        averaged = self._averaged()
        weight = 1.0 - self.decay_at(update)
        torch._foreach_lerp_(list(averaged.parameters()), [p.detach() for p in model.parameters()], weight)
        buffers = list(averaged.buffers())
        if buffers:  # one foreach copy, not a kernel per BatchNorm buffer
            torch._foreach_copy_(buffers, list(model.buffers()))

    def _averaged(self) -> nn.Module:
        if self.module is None:
            raise RuntimeError("the EMA callback has no average before on_fit_start")
        return self.module

    # --- what the trainer asks --------------------------------------------------------------------------

    def validation_models(self) -> dict[str, Callable[[], nn.Module]]:
        if self.validate == "model":
            return {}
        return {"" if self.validate == "ema" else "ema_": self._averaged}

    def checkpoint_model(self, kind: str) -> nn.Module | None:
        if self.validate == "ema" or (self.validate == "both" and kind == "best" and self.best_from_ema):
            return self._averaged()
        return None

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.module is not None:
            return dict(self.module.state_dict())
        return dict(self._pending or {})

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.module is not None:
            self.module.load_state_dict(tensors)
        else:
            self._pending = tensors
