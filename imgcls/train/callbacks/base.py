"""The callback protocol: seven hooks, each given the loop's TrainState.

Hooks fire in this order (pinned by tests/train/callbacks/test_order.py):

    on_fit_start                        once per phase (fine_tune runs two)
      on_epoch_start
        on_batch_start                  xb/yb set; may replace them (MixUp, CutMix) or set loss_factor/skip_step
        on_before_step                  gradients ready and unscaled; not called when skip_step is set
        on_batch_end                    loss_value and preds set
      on_epoch_end                      state.metrics holds the epoch's row; may set state.stop
    on_fit_end
  on_run_end(run_dir, error)            once, when train() returns (after the final report) or raises
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from imgcls.train.state import TrainState


class Callback:
    """Override the hooks you need. `order` sorts callbacks: lower runs first."""

    name: ClassVar[str] = "callback"
    order: ClassVar[int] = 50
    # True for callbacks that change what a training step computes (MixUp, accumulation, clipping): the LR range
    # test keeps them, and leaves out the ones that only watch, log or save.
    shapes_training: ClassVar[bool] = False

    def on_fit_start(self, state: TrainState) -> None:
        """Before the first epoch of a phase."""

    def on_epoch_start(self, state: TrainState) -> None:
        """Before the first training batch of an epoch."""

    def on_batch_start(self, state: TrainState) -> None:
        """Before the forward pass of a training batch."""

    def on_before_step(self, state: TrainState) -> None:
        """After backward, before the optimizer step."""

    def on_batch_end(self, state: TrainState) -> None:
        """After the optimizer step (or the skipped step)."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After validation, with the epoch's metrics."""

    def on_fit_end(self, state: TrainState) -> None:
        """After the last epoch of a phase (or an early stop)."""

    def on_run_end(self, run_dir: Path, error: BaseException | None) -> None:
        """Once per train() call, on every rank: after the final report, or with the error that ended it
        (TrainingInterrupted for Ctrl-C, TrainingStopped when a callback stopped the run)."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep for an exact resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """Tensors an exact resume needs (state_dict goes into the checkpoint's JSON header, which holds none):
        the `last` checkpoint stores them as `cb.<name>.<key>`."""
        return {}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what tensors() returned (called once, before training resumes)."""

    def validation_models(self) -> dict[str, Callable[[], nn.Module]]:
        """Models to validate, by the prefix of their metrics.csv columns (prefix + valid_loss, prefix + each
        metric). Prefix '' takes the training model's own columns, and the training model is then not evaluated.
        Each value gives its module when validation runs."""
        return {}

    def checkpoint_model(self, kind: str) -> nn.Module | None:
        """A module whose weights checkpoints of `kind` (best, last) hold as the model's instead of the training
        model's (interpret, predict and export then use them); `last` keeps the training weights too."""
        return None


HOOKS = (
    "on_fit_start",
    "on_epoch_start",
    "on_batch_start",
    "on_before_step",
    "on_batch_end",
    "on_epoch_end",
    "on_fit_end",
)


class CallbackList:
    """Callbacks sorted by order; `fire(hook, state)` calls each one, naming the callback in any error."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = sorted(callbacks, key=lambda cb: cb.order)

    def fire(self, hook: str, state: TrainState) -> None:
        for callback in self.callbacks:
            try:
                getattr(callback, hook)(state)
            except Exception as err:
                if hasattr(err, "add_note"):  # Python 3.11+
                    err.add_note(f"in callback '{callback.name}', hook {hook}")
                raise

    def end_run(self, run_dir: Path, error: BaseException | None) -> None:
        """Call every on_run_end. While an error propagates, a callback's own failure is only noted on it."""
        for callback in self.callbacks:
            try:
                callback.on_run_end(run_dir, error)
            except Exception as err:
                if error is None:
                    if hasattr(err, "add_note"):  # Python 3.11+
                        err.add_note(f"in callback '{callback.name}', on_run_end")
                    raise
                if hasattr(error, "add_note"):
                    error.add_note(f"callback '{callback.name}' could not finish: {err}")

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {cb.name: cb.state_dict() for cb in self.callbacks}

    def load_state_dict(self, states: dict[str, dict[str, Any]]) -> None:
        for callback in self.callbacks:
            if callback.name in states:
                callback.load_state_dict(states[callback.name])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{cb.name}.{key}": value for cb in self.callbacks for key, value in cb.tensors().items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for callback in self.callbacks:
            prefix = f"{callback.name}."
            own = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
            if own:
                callback.load_tensors(own)

    def validation_models(self) -> dict[str, Callable[[], nn.Module]]:
        models: dict[str, Callable[[], nn.Module]] = {}
        for callback in self.callbacks:
            models.update(callback.validation_models())
        return models

    def checkpoint_model(self, kind: str) -> nn.Module | None:
        offered = (cb.checkpoint_model(kind) for cb in self.callbacks)
        return next((module for module in offered if module is not None), None)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.callbacks)
