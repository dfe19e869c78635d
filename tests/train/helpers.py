"""A fit loop over synthetic batches, for testing the loop and callbacks without decoding images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from imgcls.augment.loader import DeviceBatch
from imgcls.models.factory import create_model
from imgcls.spec.train import FitOneCycleStage, HeadSpec, LossSpec, ModelSpec, TrainSpec
from imgcls.targets.category import Category
from imgcls.train.builder import place_model
from imgcls.train.callbacks.base import Callback, CallbackList
from imgcls.train.loop import FitContext, InterruptFlag, fit
from imgcls.train.losses import build_loss
from imgcls.train.optim import build_optimizer
from imgcls.train.runtime import Runtime
from imgcls.train.schedule import stage_phases
from imgcls.train.state import Position, TrainState


class SyntheticBatches:
    """`n` batches of random 16 px images with labels 0..2, the same every epoch. `learnable`: each image's channel
    `label` is brighter by 1.5 standard deviations, so a model can learn the labels; `device`: where they are."""

    def __init__(self, n: int = 3, bs: int = 4, device: str = "cpu", learnable: bool = False) -> None:
        self.n, self.bs, self.start = n, bs, 0
        self.device, self.learnable = torch.device(device), learnable

    def set_epoch(self, epoch_key: int, start_batch: int = 0) -> None:
        self.start = start_batch

    def __len__(self) -> int:
        return self.n - self.start

    def __iter__(self) -> Iterator[DeviceBatch]:
        for number in range(self.start, self.n):
            generator = torch.Generator().manual_seed(number)
            images = torch.randn(self.bs, 3, 16, 16, generator=generator)
            targets = torch.randint(0, 3, (self.bs,), generator=generator)
            if self.learnable:
                images += 1.5 * torch.nn.functional.one_hot(targets, 3).float()[:, :, None, None]
            images, targets = images.to(self.device), targets.to(self.device)
            yield DeviceBatch(images, targets, torch.arange(self.bs), seed=number)


def make_state(tmp_path: Path, epochs: int = 2, lr: float = 1e-3, runtime: Runtime | None = None) -> TrainState:
    """The tiny model's state for one phase of one-cycle, on `runtime`'s device (default: the CPU, fp32)."""
    torch.manual_seed(0)
    runtime = runtime or Runtime(torch.device("cpu"), "fp32", channels_last=False, compile=False)
    model = create_model(ModelSpec(arch="xresnet_tiny", head=HeadSpec(lin_ftrs=[], ps=0.0)), n_out=3)
    model = place_model(model, runtime)
    (phase,) = stage_phases(FitOneCycleStage(schedule="fit_one_cycle", epochs=epochs, lr_max=lr))
    train = TrainSpec(stages=[FitOneCycleStage(schedule="fit_one_cycle")])
    optimizer = build_optimizer(model, model.param_groups(), train, phase)
    target = Category(("a", "b", "c"))
    return TrainState(
        model, optimizer, build_loss(LossSpec(), target), runtime, target, tmp_path, phase, phase.name, Position()
    )


def run_fit(
    state: TrainState,
    callbacks: list[Callback],
    batches: SyntheticBatches | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    def validate() -> dict[str, float]:
        return {"valid_loss": 1.0}

    with InterruptFlag() as interrupt:
        source = batches or SyntheticBatches()
        ctx = FitContext(source, validate, CallbackList(callbacks), scaler, interrupt, lambda e: e, log_every=1)
        fit(state, ctx)
