"""Watching a validation number: save the best model, stop early."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from imgcls.errors import SpecError
from imgcls.registry import did_you_mean
from imgcls.train.callbacks.base import Callback
from imgcls.train.metrics import lower_is_better
from imgcls.train.state import TrainState


class _Monitor:
    """Tracks the best value of `monitor`; mode auto: min for losses, errors, rmse and mae, else max."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        self.monitor = monitor
        self.minimize = lower_is_better(monitor) if mode == "auto" else mode == "min"
        self.min_delta = min_delta
        self.best = math.inf if self.minimize else -math.inf

    def value(self, state: TrainState) -> float:
        if self.monitor not in state.metrics:
            choices = [k for k in state.metrics if k not in ("stage", "phase", "epoch", "seconds")]
            raise SpecError(
                f"monitor '{self.monitor}' is not a column of metrics.csv{did_you_mean(self.monitor, choices)}",
                hint=f"monitor one of: {', '.join(choices)}",
            )
        return float(state.metrics[self.monitor])

    def improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.minimize:
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class SaveBest(_Monitor, Callback):
    """Write checkpoints/best.safetensors each time `monitor` improves (across all stages of the run)."""

    name = "save_best"
    order = 60

    def __init__(
        self,
        write: Callable[[str, TrainState], None],
        monitor: str = "valid_loss",
        mode: str = "auto",
        min_delta: float = 0.0,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.write = write
        self.best_epoch = -1

    def on_epoch_end(self, state: TrainState) -> None:
        value = self.value(state)
        if self.improved(value):
            self.best, self.best_epoch = value, state.position.epochs_done
            self.write("best", state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])


class EarlyStopping(_Monitor, Callback):
    """End the phase after `patience` epochs without improvement (reset at each phase, as fastai does)."""

    name = "early_stopping"
    order = 65

    def __init__(
        self, monitor: str = "valid_loss", mode: str = "auto", min_delta: float = 0.0, patience: int = 1
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience = patience
        self.wait = 0

    def on_fit_start(self, state: TrainState) -> None:
        if state.position.epoch == 0 and state.position.batch == 0:
            self.best = math.inf if self.minimize else -math.inf
            self.wait = 0

    def on_epoch_end(self, state: TrainState) -> None:
        value = self.value(state)
        if self.improved(value):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            state.stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])
