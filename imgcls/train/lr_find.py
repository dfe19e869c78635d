"""`imgcls lr-find`: the learning-rate range test, as fastai's `Learner.lr_find` runs it.

The learning rate grows exponentially from `start_lr` to `end_lr` over `num_it` training batches (every parameter
group gets the same rate); after each batch the smoothed loss (the EMA of `train_loss`) is recorded, and the test
stops early once it exceeds 4x the best so far. Nothing is validated, and the model leaves the test exactly as it
came in: weights, buffers, `requires_grad` flags, train/eval mode and the global RNG state are restored.

The four suggestion functions are fastai's (minimum, steep, valley, slide), computed in float32 on the same
points fastai uses: the recorded curve without its first `num_it // 10` and last 5 points, cut at the first NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from imgcls.augment.loader import BatchSource
from imgcls.augment.pipeline import BatchAugment
from imgcls.data.datablock import build_data
from imgcls.errors import SpecError, TrainingError
from imgcls.models.factory import create_model
from imgcls.report.console import Console
from imgcls.spec.schema import Spec
from imgcls.spec.train import FineTuneStage
from imgcls.train.checkpoint import unwrap
from imgcls.train.losses import Loss, build_loss
from imgcls.train.optim import build_optimizer, set_frozen, set_hypers
from imgcls.train.runtime import Runtime, resolve_runtime
from imgcls.train.schedule import N_GROUPS, Phase
from imgcls.train.setup import DataSource, place_model, resolve_normalizer, stage_loaders
from imgcls.train.state import SmoothLoss

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


# --- the range test -----------------------------------------------------------------------------------------


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


@dataclass
class LRCurve:
    """The recorded learning rates and smoothed losses, one per training batch, and why the test ended."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    stop_reason: str = ""


def record_curve(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: BatchSource,
    loss: Loss,
    runtime: Runtime,
    options: LRFindOptions | None = None,
    on_batch: Callable[[int, float], None] | None = None,
) -> LRCurve:
    """Train `model` with an exponentially growing learning rate and record the smoothed loss after each batch.

    As fastai: the schedule runs over max(num_it, 6) batches, over at most num_it // len(batches) + 1 epochs;
    the batch that diverges is recorded before the test stops. The caller restores the weights.
    """
    options = options or LRFindOptions()
    start_lr, end_lr, num_it = options.start_lr, options.end_lr, options.num_it
    scheduled = max(num_it, 6)
    n_epochs = num_it // max(len(batches), 1) + 1
    scaler = runtime.grad_scaler()
    smooth = SmoothLoss()
    best = math.inf
    curve = LRCurve()
    iteration = 0
    model.train()
    for epoch in range(n_epochs):
        batches.set_epoch(epoch)
        for batch in batches:
            lr = exponential_lr(start_lr, end_lr, iteration / scheduled)
            # Every group was built with base_lr 1, so the scale is the learning rate itself.
            set_hypers(optimizer, lr, MOMENTUM)
            with runtime.autocast():
                value = loss(model(batch.images), batch.targets)
            (scaler.scale(value) if scaler is not None else value).backward()  # type: ignore[no-untyped-call]
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            smooth.add(value)
            iteration += 1
            current = smooth.get()
            curve.lrs.append(lr)
            curve.losses.append(current)
            if on_batch is not None:
                on_batch(iteration, current)
            best = min(best, current)  # a NaN never becomes the best, and never stops the test (fastai)
            if options.stop_div and current > DIVERGENCE * best:
                curve.stop_reason = f"the smoothed loss exceeded {DIVERGENCE:g}x its minimum at batch {iteration}"
                return curve
            if iteration >= scheduled:
                curve.stop_reason = f"all {scheduled} batches done"
                return curve
    curve.stop_reason = f"the data ran out after {iteration} batches ({n_epochs} epoch(s))"
    return curve


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
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.requires_grad = [p.requires_grad for p in model.parameters()]
        self.training = model.training
        self.rng = torch.get_rng_state()
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
        self.cuda_rng = torch.cuda.get_rng_state_all() if cuda else None

    def restore(self) -> None:
        self.model.load_state_dict(self.state)
        for param, flag in zip(self.model.parameters(), self.requires_grad, strict=True):
            param.requires_grad_(flag)
        self.model.train(self.training)
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def lr_find(
    spec: Spec,
    options: LRFindOptions | None = None,
    *,
    model: nn.Module | None = None,
    console: Console | None = None,
) -> LRFindResult:
    """Run the range test on the model the spec builds (or on `model`, which is left unchanged) with the
    spec's data, first-stage size and batch size, optimizer, loss and runtime."""
    options = options or LRFindOptions()
    options.check()
    console = console or Console(quiet=True, enabled=False)
    runtime = resolve_runtime(spec.runtime, distributed=False)  # a range test is one process
    for note in runtime.notes:
        console.warn(note)
    data = build_data(spec.data, console.quiet)
    if model is None:
        torch.manual_seed(spec.seed)  # the weights training would start from
        model = create_model(spec.model, data.info.n_out)
    stage = spec.train.stages[0]
    size, bs = stage.size or spec.final_size, stage.bs or spec.data.bs
    augment = BatchAugment(spec.augment, channels=spec.model.n_in)
    source = DataSource(spec, data, runtime)
    normalizer = resolve_normalizer(spec, lambda: stage_loaders(source, augment, size, bs))
    loaders = stage_loaders(source, augment.with_normalizer(normalizer), size, bs)
    frozen = freezes_first(spec) and not options.unfrozen
    snapshot = _Snapshot(model)
    device_before = next(model.parameters()).device
    try:
        placed = place_model(model, runtime)
        raw = unwrap(placed)
        groups = raw.param_groups()  # type: ignore[operator]
        set_frozen(raw, groups, frozen, spec.train.train_bn)
        phase = Phase("lr_find", 1, (1.0,) * N_GROUPS, frozen, False, moms=(MOMENTUM,) * 3)
        optimizer = build_optimizer(raw, groups, spec.train, phase)
        loss = build_loss(spec.train.loss, data.info.kind)
        total = min(max(options.num_it, 6), (options.num_it // max(len(loaders.train), 1) + 1) * len(loaders.train))
        console.start_bar(total, "lr-find")
        try:
            curve = record_curve(
                placed,
                optimizer,
                loaders.train,
                loss,
                runtime,
                options,
                on_batch=lambda _, value: console.advance_bar(1, f"loss {value:.4f}"),
            )
        finally:
            console.stop_bar()
    finally:
        model.to(device_before)
        snapshot.restore()
    suggestions = suggest(curve.lrs, curve.losses, options.num_it)
    return LRFindResult(curve, suggestions, options.num_it, options.start_lr, options.end_lr, frozen, size, bs)


# --- the command --------------------------------------------------------------------------------------------


def default_folder(spec: Spec) -> Path:
    """runs/<name>-lr_find: next to the runs, overwritten by the next lr-find of the same spec name."""
    return Path("runs") / f"{spec.name or 'run'}-lr_find"


def write_result(result: LRFindResult, out: Path) -> list[Path]:
    """lr_find.csv (every recorded point, and whether the suggestions used it), lr_find.json, lr_find.png."""
    from imgcls.report.plots import plot_lr_find

    out.mkdir(parents=True, exist_ok=True)
    curve = result.curve
    start = result.num_it // 10
    used_lrs, _ = suggestion_points(curve.lrs, curve.losses, result.num_it)
    used = [start <= i < start + len(used_lrs) for i in range(len(curve.lrs))]
    frame = pd.DataFrame({"lr": curve.lrs, "loss": curve.losses, "used_for_suggestions": used})
    frame.to_csv(out / "lr_find.csv", index=False, float_format="%.8g")
    summary = {
        "start_lr": result.start_lr,
        "end_lr": result.end_lr,
        "num_it": result.num_it,
        "batches": len(curve.lrs),
        "stop_reason": curve.stop_reason,
        "frozen": result.frozen,
        "size": result.size,
        "bs": result.bs,
        "suggestions": {s.name: (None if math.isnan(s.lr) else s.lr) for s in result.suggestions},
    }
    (out / "lr_find.json").write_text(json.dumps(summary, indent=2) + "\n")
    shown = len(curve.lrs) - SKIP_END if len(curve.lrs) > SKIP_END else len(curve.lrs)
    plot_lr_find(curve.lrs[:shown], curve.losses[:shown], result.suggestions, out / "lr_find.png")
    return [out / "lr_find.csv", out / "lr_find.json", out / "lr_find.png"]


def run_lr_find(spec: Spec, out: Path | None, options: LRFindOptions, quiet: bool = False) -> LRFindResult:
    """`imgcls lr-find`: run the test, print the suggestions, write the curve and its plot."""
    console = Console(quiet)
    folder = out or default_folder(spec)
    result = lr_find(spec, options, console=console)
    curve = result.curve
    what = "frozen: head and batch norm only" if result.frozen else "the whole network"
    size = "x".join(map(str, result.size)) if result.size else "item size"
    console.info(
        f"lr-find: {len(curve.lrs)} batches of {result.bs} at {size} px, lr {result.start_lr:.0e} -> "
        f"{result.end_lr:.0e}, {what}; {curve.stop_reason}"
    )
    console.info("suggested learning rates:")
    for suggestion in result.suggestions:
        value = "n/a" if math.isnan(suggestion.lr) else f"{suggestion.lr:.2e}"
        console.info(f"  {suggestion.name:<8} {value:<9} ({suggestion.note})")
    written = write_result(result, folder)
    console.info(f"wrote {', '.join(str(p) for p in written)}")
    return result


__all__ = [
    "LRFindOptions",
    "LRFindResult",
    "Suggestion",
    "lr_find",
    "minimum",
    "record_curve",
    "run_lr_find",
    "slide",
    "steep",
    "suggest",
    "valley",
]
