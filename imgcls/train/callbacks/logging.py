"""Where epochs are recorded: metrics.csv, the console, TensorBoard, and the `last` checkpoint."""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgcls.errors import SpecError
from imgcls.report.console import Console
from imgcls.train.callbacks.base import Callback
from imgcls.train.state import TrainState


class CSVLogger(Callback):
    """One row per epoch in metrics.csv, flushed and fsynced so a killed run keeps every finished epoch."""

    name = "csv_logger"
    order = 80

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = path, columns

    def on_epoch_end(self, state: TrainState) -> None:
        new_file = not self.path.exists()
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow({k: _csv_value(v) for k, v in state.metrics.items()})
            handle.flush()
            os.fsync(handle.fileno())


def _csv_value(value: Any) -> Any:
    return repr(value) if isinstance(value, float) else value


class ProgressDisplay(Callback):
    """A progress bar per epoch with the smoothed loss, then the epoch's row of the table."""

    name = "progress"
    order = 70

    def __init__(
        self, console: Console, columns: list[str], log_every: int, describe: Callable[[TrainState], str]
    ) -> None:
        self.console, self.columns, self.log_every, self.describe = console, columns, log_every, describe

    def on_fit_start(self, state: TrainState) -> None:
        self.console.info(self.describe(state))
        self.console.table_header(self.columns)

    def on_epoch_start(self, state: TrainState) -> None:
        self.console.start_bar(state.n_batches, f"epoch {state.position.epoch + 1}/{state.phase.epochs}")
        self.console.advance_bar(state.position.batch)

    def on_batch_end(self, state: TrainState) -> None:
        status = None
        if state.position.batch % self.log_every == 0:
            status = f"loss {state.smooth.get():.4f}"
        self.console.advance_bar(1, status)

    def on_epoch_end(self, state: TrainState) -> None:
        self.console.stop_bar()
        self.console.table_row(state.metrics)

    def on_fit_end(self, state: TrainState) -> None:
        self.console.stop_bar()


class TensorBoard(Callback):
    """Scalars for TensorBoard: the smoothed training loss every `log_every` steps, every metric per epoch."""

    name = "tensorboard"
    order = 75

    def __init__(self, log_dir: Path, log_every: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SpecError(
                "the tensorboard callback needs the tensorboard package",
                hint="pip install tensorboard (or pip install 'imgcls[tensorboard]')",
            ) from None
        self.writer = SummaryWriter(str(log_dir))
        self.log_every = log_every

    def on_batch_end(self, state: TrainState) -> None:
        if state.position.step % self.log_every == 0 and not state.skip_step:
            self.writer.add_scalar("train/smooth_loss", state.smooth.get(), state.position.step)
            self.writer.add_scalar("train/lr", state.optimizer.param_groups[-1]["lr"], state.position.step)

    def on_epoch_end(self, state: TrainState) -> None:
        for key, value in state.metrics.items():
            if isinstance(value, float) and key != "seconds":
                self.writer.add_scalar(f"epoch/{key}", value, state.position.epochs_done)
        self.writer.flush()

    def on_fit_end(self, state: TrainState) -> None:
        self.writer.flush()


class SaveLast(Callback):
    """Write checkpoints/last.safetensors after every epoch (after every other callback has updated), and in the
    middle of an epoch once `every` seconds have passed since the last write (0: at epoch ends only), so that a
    kill loses minutes of training, not an epoch."""

    name = "save_last"
    order = 90

    def __init__(self, write: Callable[[str, TrainState], None], every: float = 0.0) -> None:
        self.write, self.every = write, every
        self._since = time.monotonic()

    def on_fit_start(self, state: TrainState) -> None:
        self._since = time.monotonic()

    def on_batch_end(self, state: TrainState) -> None:
        if self.every > 0 and time.monotonic() - self._since >= self.every and state.position.batch < state.n_batches:
            self.write("last", state)
            self._since = time.monotonic()

    def on_epoch_end(self, state: TrainState) -> None:
        self.write("last", state)
        self._since = time.monotonic()
