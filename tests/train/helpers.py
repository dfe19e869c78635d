"""A fit loop over synthetic batches, for testing the loop and callbacks without decoding images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from imgcls.augment.loader import DeviceBatch
from imgcls.models.factory import create_model
from imgcls.spec.train import FitOneCycleStage, HeadSpec, LossSpec, ModelSpec, TrainSpec
from imgcls.targets.category import Category
from imgcls.train.callbacks.base import Callback, CallbackList
from imgcls.train.loop import FitContext, InterruptFlag, fit
from imgcls.train.losses import build_loss
from imgcls.train.optim import build_optimizer
from imgcls.train.runtime import Runtime
from imgcls.train.schedule import stage_phases
from imgcls.train.state import Position, TrainState


class SyntheticBatches:
    """`n` batches of random 16 px images with labels 0..2, the same every epoch."""

    def __init__(self, n: int = 3, bs: int = 4) -> None:
        self.n, self.bs, self.start = n, bs, 0

    def set_epoch(self, epoch_key: int, start_batch: int = 0) -> None:
        self.start = start_batch

    def __len__(self) -> int:
        return self.n - self.start

    def __iter__(self) -> Iterator[DeviceBatch]:
        for number in range(self.start, self.n):
            generator = torch.Generator().manual_seed(number)
            images = torch.randn(self.bs, 3, 16, 16, generator=generator)
            targets = torch.randint(0, 3, (self.bs,), generator=generator)
            yield DeviceBatch(images, targets, torch.arange(self.bs), seed=number)


def make_state(tmp_path: Path, epochs: int = 2, lr: float = 1e-3) -> TrainState:
    torch.manual_seed(0)
    model = create_model(ModelSpec(arch="xresnet_tiny", head=HeadSpec(lin_ftrs=[], ps=0.0)), n_out=3)
    (phase,) = stage_phases(FitOneCycleStage(schedule="fit_one_cycle", epochs=epochs, lr_max=lr))
    train = TrainSpec(stages=[FitOneCycleStage(schedule="fit_one_cycle")])
    optimizer = build_optimizer(model, model.param_groups(), train, phase)
    runtime = Runtime(torch.device("cpu"), "fp32", channels_last=False, compile=False)
    target = Category(("a", "b", "c"))
    return TrainState(
        model, optimizer, build_loss(LossSpec(), target), runtime, target, tmp_path, phase, phase.name, Position()
    )


def run_fit(state: TrainState, callbacks: list[Callback], batches: SyntheticBatches | None = None) -> None:
    def validate() -> dict[str, float]:
        return {"valid_loss": 1.0}

    with InterruptFlag() as interrupt:
        ctx = FitContext(
            batches or SyntheticBatches(), validate, CallbackList(callbacks), None, interrupt, lambda e: e, log_every=1
        )
        fit(state, ctx)
