"""The training loop: one phase, from wherever `state.position` says, with callbacks at visible points."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType, TracebackType

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from imgcls.augment.loader import BatchSource, DeviceBatch
from imgcls.errors import TrainingError, TrainingInterrupted
from imgcls.train.callbacks.base import CallbackList
from imgcls.train.optim import set_hypers
from imgcls.train.schedule import progress
from imgcls.train.state import TrainState

# SIGTERM is what torchrun and cluster schedulers send before killing a worker: treat it like Ctrl-C.
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class CancelFit(Exception):  # noqa: N818 - control flow, as fastai's CancelFitException
    """Raised by a callback to end the phase at once (after the current batch): on_fit_end still fires."""


class InterruptFlag:
    """Ctrl-C (or SIGTERM) sets a flag that the loop checks between batches, so a checkpoint is never taken
    mid-step. A second one interrupts at once. Under DDP the ranks agree on the flag every `sync_every`
    batches, so that they all stop after the same batch."""

    def __init__(self, sync_every: int = 10) -> None:
        self.requested = False
        self.sync_every = sync_every
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in _SIGNALS}
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _agreed(self, state: TrainState) -> bool:
        if not state.runtime.distributed:
            return self.requested
        if state.position.batch % self.sync_every != 0:
            return False
        flag = torch.tensor([float(self.requested)], device=state.runtime.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def check(self, state: TrainState) -> None:
        if self._agreed(state):
            pos = state.position
            raise TrainingInterrupted(f"interrupted in {where(state)}, after batch {pos.batch}")


@dataclass
class FitContext:
    """What a phase trains with, besides the state."""

    train: BatchSource
    validate: Callable[[], dict[str, float]]
    callbacks: CallbackList
    scaler: torch.amp.GradScaler | None
    interrupt: InterruptFlag
    epoch_key: Callable[[int], int]
    log_every: int = 10
    # A NaN or infinite smoothed loss stops training with a TrainingError (the LR range test lets it run on).
    stop_on_nonfinite: bool = True


def where(state: TrainState) -> str:
    """The position as a person reads it: stage, phase and epoch numbered from 1 (Position counts from 0)."""
    pos = state.position
    return f"stage {pos.stage + 1}, phase {pos.phase + 1} {state.phase_name}, epoch {pos.epoch + 1}"


def check_finite(state: TrainState) -> None:
    value = state.smooth.get()
    if not math.isfinite(value):
        pos = state.position
        ways = ["lower the learning rate (imgcls lr-find suggests one)", "add the gradient_clip callback"]
        if state.runtime.precision == "fp16":
            ways.append("use runtime.precision: bf16 or fp32 (fp16 overflows first)")
        last = state.run_dir / "checkpoints" / "last.safetensors"
        kept = (
            f"{last} holds the weights of the last checkpoint before it"
            if last.is_file()
            else "no checkpoint was written before it: start the run again"
        )
        raise TrainingError(
            f"the training loss became {value} in {where(state)}, at batch {pos.batch}",
            hint=f"{'; '.join(ways)}; {kept}",
        )


def train_batch(state: TrainState, ctx: FitContext, batch: DeviceBatch) -> None:
    phase, pos, optimizer = state.phase, state.position, state.optimizer
    # schedule: this batch's learning rates and momentum
    pct = progress(pos.epoch, pos.batch, state.n_batches, phase.epochs)
    set_hypers(optimizer, phase.lr_scale(pct), phase.momentum(pct))
    state.xb, state.yb, state.batch_seed = batch.images, batch.targets, batch.seed
    state.loss_factor, state.skip_step = 1.0, False
    ctx.callbacks.fire("on_batch_start", state)
    # forward and loss, then backward (scaled for fp16; no gradient all-reduce while accumulating)
    accumulating = state.skip_step and isinstance(state.model, DistributedDataParallel)
    with state.model.no_sync() if accumulating else contextlib.nullcontext():  # type: ignore[operator]
        with state.runtime.autocast():
            state.preds = state.model(state.xb)
            state.loss_value = state.loss(state.preds, state.yb)
        scaled = state.loss_value * state.loss_factor
        (ctx.scaler.scale(scaled) if ctx.scaler is not None else scaled).backward()  # type: ignore[no-untyped-call]
    # optimizer step, unless a callback is accumulating gradients
    if not state.skip_step:
        if ctx.scaler is not None:
            ctx.scaler.unscale_(optimizer)
        ctx.callbacks.fire("on_before_step", state)
        if ctx.scaler is not None:
            ctx.scaler.step(optimizer)
            ctx.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        pos.step += 1
    state.smooth.add(state.loss_value)
    pos.batch += 1
    ctx.callbacks.fire("on_batch_end", state)
    if ctx.stop_on_nonfinite and pos.batch % ctx.log_every == 0:
        check_finite(state)


def fit(state: TrainState, ctx: FitContext) -> None:
    """Train `state.phase` to its last epoch (or until a callback sets state.stop or raises CancelFit)."""
    pos = state.position
    ctx.callbacks.fire("on_fit_start", state)
    try:
        while pos.epoch < state.phase.epochs and not state.stop:
            _epoch(state, ctx)
    except CancelFit:
        pass
    ctx.callbacks.fire("on_fit_end", state)


def _epoch(state: TrainState, ctx: FitContext) -> None:
    pos = state.position
    # training batches (from pos.batch when resuming mid-epoch)
    ctx.train.set_epoch(ctx.epoch_key(pos.epoch), start_batch=pos.batch)
    state.n_batches = pos.batch + len(ctx.train)
    state.model.train()
    started = time.perf_counter()
    ctx.callbacks.fire("on_epoch_start", state)
    for batch in ctx.train:
        train_batch(state, ctx, batch)
        ctx.interrupt.check(state)
    if ctx.stop_on_nonfinite:
        check_finite(state)
    # validation and the epoch's row; position moves on before callbacks checkpoint it
    # Stage and epoch are numbered from 1 in the row (the table, metrics.csv, the record's metrics); Position
    # keeps counting from 0.
    row = {"stage": pos.stage + 1, "phase": state.phase_name, "epoch": pos.epoch + 1, "train_loss": state.smooth.get()}
    if not state.skip_validation:
        row.update(ctx.validate())
    row.update(lr=state.optimizer.param_groups[-1]["lr"], seconds=time.perf_counter() - started)
    state.metrics = row
    pos.epoch, pos.batch, pos.epochs_done = pos.epoch + 1, 0, pos.epochs_done + 1
    ctx.callbacks.fire("on_epoch_end", state)
