"""What the training loop and its callbacks share, in one typed object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imgcls.targets import Target
from imgcls.train.losses import Loss
from imgcls.train.runtime import Runtime
from imgcls.train.schedule import Phase

SMOOTH_BETA = 0.98  # fastai's AvgSmoothLoss: train_loss is this EMA of the batch losses, debiased


@dataclass
class Position:
    """Where a run is: resumable at any batch boundary."""

    stage: int = 0
    phase: int = 0
    epoch: int = 0  # within the phase
    batch: int = 0  # within the epoch; 0 = at the epoch's start
    step: int = 0  # optimizer steps over the whole run
    epochs_done: int = 0  # rows of metrics.csv

    def key(self) -> tuple[int, int, int, int]:
        return (self.stage, self.phase, self.epoch, self.batch)


@dataclass
class SmoothLoss:
    """fastai's AvgSmoothLoss: an EMA from 0, debiased by 1 - beta^count; kept on the device so that reading
    it (every few batches) is the only time the host waits for the device."""

    value: torch.Tensor | None = None
    count: int = 0

    def add(self, loss: torch.Tensor) -> None:
        detached = loss.detach().float()
        previous = torch.zeros_like(detached) if self.value is None else self.value
        self.value = torch.lerp(detached, previous, SMOOTH_BETA)
        self.count += 1

    def get(self) -> float:
        if self.value is None:
            return float("nan")
        return float(self.value) / (1 - SMOOTH_BETA**self.count)

    def to_dict(self) -> dict[str, float]:
        return {"value": float(self.value) if self.value is not None else 0.0, "count": self.count}

    @classmethod
    def from_dict(cls, raw: dict[str, float], device: torch.device) -> SmoothLoss:
        count = int(raw["count"])
        return cls(torch.tensor(raw["value"], device=device) if count else None, count)


@dataclass
class TrainState:
    """The loop's state. Callbacks read it, and may set xb/yb (batch start), skip_step, loss_factor or stop."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: Loss
    runtime: Runtime
    target: Target
    run_dir: Path
    phase: Phase
    phase_name: str
    position: Position
    n_batches: int = 0
    # Seed of the current training batch: callbacks that need randomness (MixUp) derive it from this.
    batch_seed: int = 0
    xb: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    yb: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    preds: torch.Tensor | None = None
    loss_value: torch.Tensor | None = None
    loss_factor: float = 1.0
    skip_step: bool = False
    stop: bool = False
    # Set by a callback (the LR range test) whose phase has no validation: epochs end without a metrics row.
    skip_validation: bool = False
    smooth: SmoothLoss = field(default_factory=SmoothLoss)
    metrics: dict[str, Any] = field(default_factory=dict)
