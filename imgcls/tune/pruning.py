"""Optuna's pruning, fed from the training loop: the trial's metric after every epoch."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from imgcls.errors import TrainingError, TrainingStopped
from imgcls.train.callbacks.base import Callback
from imgcls.train.state import TrainState

if TYPE_CHECKING:
    import optuna


class PruneTrial(Callback):
    """Report `metric` to the trial after every epoch (step = the metrics.csv row); when the pruner says so,
    stop the run with TrainingStopped, after the epoch's row and `last` checkpoint are written. A NaN metric
    (a diverged trial whose training loss is still finite) fails the trial at once with a TrainingError."""

    name = "optuna_pruning"
    order = 95  # after save_last (90): a pruned trial's folder is complete up to the epoch it stopped at

    def __init__(self, trial: optuna.Trial, metric: str, last_step: int) -> None:
        # Pruning after the last epoch saves nothing and would throw the finished trial's value away.
        self.trial, self.metric, self.last_step = trial, metric, last_step

    def on_epoch_end(self, state: TrainState) -> None:
        if not state.runtime.is_main:
            return
        value = float(state.metrics[self.metric])
        step = state.position.epochs_done
        if math.isnan(value):
            raise TrainingError(
                f"{self.metric} became nan at epoch row {step}",
                hint="the trial diverged: narrow the search space (e.g. lower learning rates)",
            )
        self.trial.report(value, step)
        if step < self.last_step and self.trial.should_prune():
            raise TrainingStopped(f"pruned after epoch row {step}: {self.metric} {value:.6g}")
