"""Callbacks keyed by their YAML name (`callbacks: [{name: mixup, alpha: 0.4}]`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls.registry import Registry
from imgcls.spec.schema import Spec
from imgcls.spec.train import Callback as CallbackSpec
from imgcls.train.callbacks.base import Callback, CallbackList
from imgcls.train.callbacks.ema import EMA
from imgcls.train.callbacks.experiment_tracking import MlflowTracker, WandbTracker
from imgcls.train.callbacks.gradients import GradientAccumulation, GradientClip
from imgcls.train.callbacks.logging import TensorBoard
from imgcls.train.callbacks.mix import CutMix, MixUp
from imgcls.train.callbacks.tracking import EarlyStopping, SaveBest
from imgcls.train.state import TrainState


@dataclass(frozen=True)
class CallbackContext:
    """What callbacks may need from the run: its folder, a checkpoint writer, the logging interval, the spec."""

    run_dir: Path
    write: Callable[[str, TrainState], None]
    log_every: int
    spec: Spec


Builder = Callable[[Any, CallbackContext], Callback]

CALLBACKS: Registry[Builder] = Registry(
    "callback",
    {
        "mixup": lambda s, c: MixUp(s.alpha),
        "cutmix": lambda s, c: CutMix(s.alpha),
        "save_best": lambda s, c: SaveBest(c.write, s.monitor, s.mode, s.min_delta),
        "early_stopping": lambda s, c: EarlyStopping(s.monitor, s.mode, s.min_delta, s.patience),
        "gradient_accumulation": lambda s, c: GradientAccumulation(s.n_acc),
        "gradient_clip": lambda s, c: GradientClip(s.max_norm, s.norm_type),
        "ema": lambda s, c: EMA(s.decay, s.warmup, s.warmup_power, s.every, s.validate, _best_from_ema(c.spec)),
        "tensorboard": lambda s, c: TensorBoard(c.run_dir / s.log_dir, c.log_every),
        "mlflow": lambda s, c: MlflowTracker(s, c.spec, c.run_dir),
        "wandb": lambda s, c: WandbTracker(s, c.spec, c.run_dir),
    },
)


def _best_from_ema(spec: Spec) -> bool:
    """Whether save_best watches an ema_ column (validate: both), so that `best` holds the averaged weights."""
    return any(cb.name == "save_best" and getattr(cb, "monitor", "").startswith("ema_") for cb in spec.callbacks)


def build_callbacks(specs: list[CallbackSpec], ctx: CallbackContext) -> list[Callback]:
    """The spec's callbacks; save_best (on valid_loss) is always there, so every run has a best checkpoint."""
    callbacks = [CALLBACKS.get(spec.name)(spec, ctx) for spec in specs]
    if not any(isinstance(cb, SaveBest) for cb in callbacks):
        callbacks.append(SaveBest(ctx.write))
    return callbacks


__all__ = ["CALLBACKS", "Callback", "CallbackContext", "CallbackList", "build_callbacks"]
