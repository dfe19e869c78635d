"""`imgcls lr-find`: the learning-rate range test, as fastai's `Learner.lr_find` runs it: a callback on the one
training loop, so the spec's MixUp, CutMix, gradient accumulation and clipping apply during the test.

The learning rate grows exponentially from `start_lr` to `end_lr` over `num_it` training batches (every parameter
group gets the same rate); after each batch the smoothed loss (the EMA of `train_loss`) is recorded, and the test
stops early once it exceeds 4x the best so far. Nothing is validated, and the model leaves the test exactly as it
came in: weights, buffers, `requires_grad` flags, train/eval mode and the global RNG state are restored.

The four suggestion functions are fastai's (minimum, steep, valley, slide), computed in float32 on the same
points fastai uses: the recorded curve without its first `num_it // 10` and last 5 points, cut at the first NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imgcls.augment.loader import BatchSource
from imgcls.errors import SpecError, TrainingError
from imgcls.report.console import Console
from imgcls.spec.schema import Spec
from imgcls.spec.train import FineTuneStage
from imgcls.train.builder import Pipeline, place_model
from imgcls.train.callbacks import CallbackContext, build_callbacks
from imgcls.train.callbacks.base import Callback, CallbackList
from imgcls.train.checkpoint import unwrap
from imgcls.train.loop import CancelFit, FitContext, InterruptFlag, fit
from imgcls.train.optim import build_optimizer, set_frozen, set_hypers
from imgcls.train.record import RunRecord
from imgcls.train.runtime import resolve_runtime
from imgcls.train.schedule import N_GROUPS, Phase
from imgcls.train.state import Position, TrainState

START_LR, END_LR, NUM_IT = 1e-7, 10.0, 100
MOMENTUM = 0.9  # fastai's Adam default (beta1); lr_find schedules the learning rate only
DIVERGENCE = 4.0  # stop when the smoothed loss exceeds this multiple of the best one
SKIP_END = 5  # points dropped at the end, for the suggestions and the plot


# --- the suggestion functions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    """A suggested learning rate, and the point (lr, loss) fastai marks on the curve for it.

    `lr` is NaN when the curve is too short for the method (slide needs lr_diff + 1 points)."""

    name: str
    lr: float
    point: tuple[float, float]
    note: str = ""


def _tensors(lrs: object, losses: object) -> tuple[torch.Tensor, torch.Tensor]:
    """fastai runs the suggestions on float32 tensors; so do we, so that near-ties break the same way."""
    return torch.as_tensor(lrs, dtype=torch.float32), torch.as_tensor(losses, dtype=torch.float32)


def _loss_at(lrs: torch.Tensor, losses: torch.Tensor, lr: float) -> float:
    """The loss at the recorded lr nearest to `lr` (where fastai draws the marker)."""
    nearest = min(range(len(lrs)), key=lambda i: abs(float(lrs[i]) - lr))
    return float(losses[nearest])


def minimum(lrs: object, losses: object) -> Suggestion:
    """A tenth of the learning rate at the lowest loss (the marker sits at the minimum itself)."""
    lr_t, loss_t = _tensors(lrs, losses)
    lr_min = float(lr_t[int(loss_t.argmin())])
    return Suggestion("minimum", lr_min / 10, (lr_min, _loss_at(lr_t, loss_t, lr_min)), "lowest loss / 10")


def steep(lrs: object, losses: object) -> Suggestion:
    """The learning rate where the loss falls fastest per unit of log(lr) (forward differences)."""
    lr_t, loss_t = _tensors(lrs, losses)
    slopes = (loss_t[1:] - loss_t[:-1]) / (lr_t[1:].log() - lr_t[:-1].log())
    lr_steep = float(lr_t[int(slopes.argmin())])
    return Suggestion("steep", lr_steep, (lr_steep, _loss_at(lr_t, loss_t, lr_steep)), "steepest descent")


def valley(lrs: object, losses: object) -> Suggestion:
    """fastai's default: the longest strictly decreasing subsequence of the losses, then a point a little past
    a third of the way along it. `max_end` is updated inside the inner loop, as fastai does."""
    lr_t, loss_t = _tensors(lrs, losses)
    values = loss_t.tolist()
    n = len(values)
    longest = [1] * n  # longest decreasing subsequence ending at each point
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if values[i] < values[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
            if longest[max_end] < longest[i]:
                max_end = i
                max_start = max_end - longest[max_end]
    sections = (max_end - max_start) / 3
    index = max_start + int(sections) + int(sections / 2)
    lr = float(lr_t[index])
    return Suggestion("valley", lr, (lr, float(loss_t[index])), "fastai's default")


def slide(
    lrs: object, losses: object, lr_diff: int = 15, thresh: float = 0.005, adjust_value: float = 1.0
) -> Suggestion:
    """fastai's interval slide rule: walk a window of lr_diff points leftwards from the end until the loss
    gradients at its two ends differ by at most `thresh`; suggest the left end."""
    lr_t, loss_t = _tensors(lrs, losses)
    values = loss_t.numpy()
    if len(values) < lr_diff + 1:
        return Suggestion("slide", math.nan, (math.nan, math.nan), f"needs at least {lr_diff + 1} points")
    gradient = np.gradient(values)
    right = -1
    left = right - lr_diff
    local_min_lr = float(lr_t[left])
    while left >= -len(values) and abs(gradient[right] - gradient[left]) > thresh:
        local_min_lr = float(lr_t[left])
        right -= 1
        left -= 1
    lr = local_min_lr * adjust_value
    loss = float(np.interp(np.log10(lr), np.log10(lr_t.numpy()), values))
    return Suggestion("slide", lr, (lr, loss), "interval slide rule")


SUGGESTION_FUNCTIONS: tuple[Callable[[object, object], Suggestion], ...] = (minimum, steep, valley, slide)


def suggestion_points(lrs: list[float], losses: list[float], num_it: int) -> tuple[list[float], list[float]]:
    """The points the suggestions use: [num_it // 10 : -5] of the recorded curve, cut at its first NaN loss."""
    start = num_it // 10
    kept_lrs, kept_losses = lrs[start:-SKIP_END], losses[start:-SKIP_END]
    for index, loss in enumerate(kept_losses):
        if math.isnan(loss):
            return kept_lrs[:index], kept_losses[:index]
    return kept_lrs, kept_losses


def suggest(lrs: list[float], losses: list[float], num_it: int) -> list[Suggestion]:
    """The four suggestions for a recorded curve (fastai's lr_find post-processing)."""
    kept_lrs, kept_losses = suggestion_points(lrs, losses, num_it)
    if len(kept_lrs) < 2:
        raise TrainingError(
            f"the lr-find curve has {len(lrs)} points, which leaves {len(kept_lrs)} after dropping the first "
            f"{num_it // 10} and the last {SKIP_END} (and any NaN loss): too few to suggest a learning rate",
            hint="raise --num-it, or lower --end-lr if the loss diverged early",
        )
    return [function(kept_lrs, kept_losses) for function in SUGGESTION_FUNCTIONS]


# --- the range test ---------------------------------------------------------------------------------------


def exponential_lr(start_lr: float, end_lr: float, pos: float) -> float:
    """fastai's SchedExp: start_lr * (end_lr / start_lr) ** pos."""
    return float(start_lr * (end_lr / start_lr) ** pos)


@dataclass(frozen=True)
class LRFindOptions:
    start_lr: float = START_LR
    end_lr: float = END_LR
    num_it: int = NUM_IT
    stop_div: bool = True
    unfrozen: bool = False

    def check(self) -> None:
        if not 0 < self.start_lr < self.end_lr:
            raise SpecError(
                f"lr-find needs 0 < start_lr < end_lr, got {self.start_lr:g} and {self.end_lr:g}",
                hint="the defaults are --start-lr 1e-7 --end-lr 10",
            )
        if self.num_it < 1:
            raise SpecError(f"--num-it must be positive, got {self.num_it}")

    @property
    def scheduled(self) -> int:
        """Batches of the exponential schedule (fastai runs at least 6)."""
        return max(self.num_it, 6)

    def epochs(self, batches_per_epoch: int) -> int:
        """fastai's num_it // len(dl) + 1 epochs: enough to reach num_it batches, at most."""
        return self.num_it // max(batches_per_epoch, 1) + 1


@dataclass
class LRCurve:
    """The recorded learning rates and smoothed losses, one per training batch, and why the test ended."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    stop_reason: str = ""


class LRFinder(Callback):
    """The range test as a callback: each batch gets the next learning rate of the exponential schedule, the
    smoothed loss after it is recorded, validation is skipped, and the phase ends (CancelFit) once the loss
    diverges or the schedule is done. The batch that diverges is recorded before the test stops (fastai)."""

    name = "lr_find"
    order = 10  # before the batch's other callbacks: MixUp and accumulation see the scheduled rate

    def __init__(self, options: LRFindOptions, on_batch: Callable[[int, float], None] | None = None) -> None:
        self.options, self.on_batch = options, on_batch
        self.curve = LRCurve()
        self.best = math.inf

    def on_fit_start(self, state: TrainState) -> None:
        state.skip_validation = True

    def on_batch_start(self, state: TrainState) -> None:
        # Every group was built with base_lr 1, so the scale is the learning rate itself.
        lr = exponential_lr(self.options.start_lr, self.options.end_lr, len(self.curve.lrs) / self.options.scheduled)
        set_hypers(state.optimizer, lr, MOMENTUM)
        self.curve.lrs.append(lr)

    def on_batch_end(self, state: TrainState) -> None:
        current = state.smooth.get()
        self.curve.losses.append(current)
        iteration = len(self.curve.losses)
        if self.on_batch is not None:
            self.on_batch(iteration, current)
        self.best = min(self.best, current)  # a NaN never becomes the best, and never stops the test (fastai)
        if self.options.stop_div and current > DIVERGENCE * self.best:
            self.curve.stop_reason = f"the smoothed loss exceeded {DIVERGENCE:g}x its minimum at batch {iteration}"
            raise CancelFit
        if iteration >= self.options.scheduled:
            self.curve.stop_reason = f"all {self.options.scheduled} batches done"
            raise CancelFit

    def on_fit_end(self, state: TrainState) -> None:
        if not self.curve.stop_reason:
            epochs = state.position.epochs_done
            self.curve.stop_reason = f"the data ran out after {len(self.curve.lrs)} batches ({epochs} epoch(s))"


@dataclass
class LRFindResult:
    curve: LRCurve
    suggestions: list[Suggestion]
    num_it: int
    start_lr: float
    end_lr: float
    frozen: bool
    size: tuple[int, int] | None
    bs: int
    callbacks: list[str] = field(default_factory=list)  # the spec's callbacks that ran during the test


def freezes_first(spec: Spec) -> bool:
    """Whether training starts frozen (head and batch norm only): a fine_tune first stage on a pretrained or
    weights-file model, or a first stage with freeze: true on one."""
    stage = spec.train.stages[0]
    pretrained = spec.model.pretrained or spec.model.weights is not None
    frozen_stage = (isinstance(stage, FineTuneStage) and stage.freeze_epochs > 0) or bool(
        getattr(stage, "freeze", False)
    )
    return pretrained and frozen_stage


class _Snapshot:
    """Everything the test changes on a model, to put back afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.requires_grad = [p.requires_grad for p in model.parameters()]
        self.training = model.training
        self.rng = torch.get_rng_state()
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
        self.cuda_rng = torch.cuda.get_rng_state_all() if cuda else None

    def restore(self) -> None:
        self.model.to(self.device)
        self.model.load_state_dict(self.state)
        for param, flag in zip(self.model.parameters(), self.requires_grad, strict=True):
            param.requires_grad_(flag)
        self.model.train(self.training)
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def run_range_test(
    state: TrainState,
    batches: BatchSource,
    options: LRFindOptions,
    callbacks: list[Callback],
    console: Console | None = None,
) -> LRCurve:
    """Fit `state` (a phase built with base learning rates of 1) with the LRFinder and `callbacks`; the caller
    restores the model afterwards."""
    finder = LRFinder(options, on_batch=(lambda _, v: console.advance_bar(1, f"loss {v:.4f}")) if console else None)
    n_epochs = options.epochs(len(batches))
    state.phase = Phase("lr_find", n_epochs, (1.0,) * N_GROUPS, state.phase.frozen, False, moms=(MOMENTUM,) * 3)
    total = min(options.scheduled, n_epochs * len(batches))
    if console is not None:
        console.start_bar(total, "lr-find")
    try:
        with InterruptFlag() as interrupt:
            ctx = FitContext(
                batches,
                lambda: {},
                CallbackList([finder, *callbacks]),
                state.runtime.grad_scaler(),
                interrupt,
                epoch_key=lambda epoch: epoch,
                stop_on_nonfinite=False,
            )
            fit(state, ctx)
    finally:
        if console is not None:
            console.stop_bar()
    return finder.curve


def lr_find(
    spec: Spec,
    options: LRFindOptions | None = None,
    *,
    model: nn.Module | None = None,
    console: Console | None = None,
    record: RunRecord | None = None,
    stage: int = 0,
) -> LRFindResult:
    """Run the range test on the model the spec builds (or on `model`, which is left unchanged) with the
    spec's data, the 0-based `stage`'s size and batch size, optimizer, loss, training callbacks and runtime.
    `record` (a trained run's, with its `model`): the run's normalization and vocab, and the whole network is
    tested (trained weights are not frozen)."""
    options = options or LRFindOptions()
    options.check()
    console = console or Console(quiet=True, enabled=False)
    runtime = resolve_runtime(spec.runtime, distributed=False)  # a range test is one process
    for note in runtime.notes:
        console.warn(note)
    pipeline = Pipeline(spec, runtime, record, quiet=console.quiet)
    if model is None:
        torch.manual_seed(spec.seed)  # the weights training would start from
        model = pipeline.new_model()
    loaders = pipeline.stage_loaders(stage)
    context = CallbackContext(Path("."), lambda kind, state: None, spec.runtime.log_every, spec)
    shaping = [cb for cb in build_callbacks(spec.callbacks, context) if cb.shapes_training]
    frozen = freezes_first(spec) and not options.unfrozen and record is None
    snapshot = _Snapshot(model)
    try:
        placed = place_model(model, runtime)
        raw = unwrap(placed)
        groups = raw.param_groups()  # type: ignore[operator]
        set_frozen(raw, groups, frozen, spec.train.train_bn)
        phase = Phase("lr_find", 1, (1.0,) * N_GROUPS, frozen, False, moms=(MOMENTUM,) * 3)
        optimizer = build_optimizer(raw, groups, spec.train, phase)
        state = TrainState(
            placed, optimizer, pipeline.loss, runtime, pipeline.target, Path("."), phase, "lr_find", Position()
        )
        curve = run_range_test(state, loaders.train, options, shaping, console)
    finally:
        snapshot.restore()
    try:
        suggestions = suggest(curve.lrs, curve.losses, options.num_it)
    except TrainingError as err:
        if not curve.stop_reason.startswith("the smoothed loss exceeded") or not options.stop_div:
            raise
        raise TrainingError(
            f"{err.message}: {curve.stop_reason}",
            hint="a trained model's loss is small and noisy, so 4x its minimum comes at once: add --no-stop-div",
        ) from None
    names = [cb.name for cb in shaping]
    return LRFindResult(
        curve, suggestions, options.num_it, options.start_lr, options.end_lr, frozen, loaders.size, loaders.bs, names
    )


__all__ = [
    "LRFindOptions",
    "LRFindResult",
    "LRFinder",
    "Suggestion",
    "lr_find",
    "minimum",
    "run_range_test",
    "slide",
    "steep",
    "suggest",
    "suggestion_points",
    "valley",
]
