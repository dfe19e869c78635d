"""Schedules as pure functions of training progress, and stages turned into phases.

A stage is what the spec says (fit_one_cycle, fine_tune, fit); a phase is one optimizer run with one freeze
state: fine_tune is two phases (head only, then everything), the others one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from imgcls.spec.train import FineTuneStage, FitOneCycleStage, FitStage, Stage

N_GROUPS = 3  # early body, late body, head


def sched_cos(start: float, end: float, pos: float) -> float:
    """Cosine from start (pos 0) to end (pos 1)."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def combined_cos(pct: float, start: float, middle: float, end: float, pos: float) -> float:
    """Cosine start -> middle over the first `pct` of training, then middle -> end (fastai's combined_cos)."""
    if pos < pct:
        return sched_cos(start, middle, pos / pct)
    return sched_cos(middle, end, (pos - pct) / (1 - pct)) if pct < 1 else end


def group_lrs(lr: float | tuple[float, float], n_groups: int = N_GROUPS) -> list[float]:
    """One learning rate per group: a float for all; [low, high] spread geometrically (fastai's slice)."""
    if isinstance(lr, tuple):
        low, high = lr
        if n_groups == 1:
            return [high]
        step = (high / low) ** (1 / (n_groups - 1))
        return [low * step**i for i in range(n_groups)]
    return [lr] * n_groups


@dataclass(frozen=True)
class Phase:
    """One optimizer run: `epochs` at `lrs` (peak, per group) with one freeze state."""

    name: str
    epochs: int
    lrs: tuple[float, ...]
    frozen: bool
    one_cycle: bool
    div: float = 25.0
    div_final: float = 1e5
    pct_start: float = 0.25
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95)
    wd: float | None = None

    def lr_scale(self, pos: float) -> float:
        """Learning-rate multiplier of the peak at progress `pos` in [0, 1) through the phase."""
        if not self.one_cycle:
            return 1.0
        return combined_cos(self.pct_start, 1 / self.div, 1.0, 1 / self.div_final, pos)

    def momentum(self, pos: float) -> float:
        if not self.one_cycle:
            return self.moms[0]
        return combined_cos(self.pct_start, *self.moms, pos)


def stage_phases(stage: Stage) -> list[Phase]:
    """The phases a stage runs, with fastai's numbers."""
    if isinstance(stage, FineTuneStage):
        phases = []
        if stage.freeze_epochs > 0:
            # fastai: fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99) with the default div 25;
            # slice(x) gives the body groups x/10 (only their batch-norm layers train while frozen).
            head_lrs = (stage.base_lr / 10, stage.base_lr / 10, stage.base_lr)
            phases.append(
                Phase("frozen", stage.freeze_epochs, head_lrs, True, True, pct_start=0.99, moms=stage.moms, wd=stage.wd)
            )
        half = stage.base_lr / 2
        unfrozen = tuple(group_lrs((half / stage.lr_mult, half)))
        phases.append(
            Phase(
                "unfrozen",
                stage.epochs,
                unfrozen,
                False,
                True,
                div=stage.div,
                pct_start=stage.pct_start,
                moms=stage.moms,
                wd=stage.wd,
            )
        )
        return phases
    if isinstance(stage, FitOneCycleStage):
        return [
            Phase(
                "fit_one_cycle",
                stage.epochs,
                tuple(group_lrs(stage.lr_max)),
                stage.freeze,
                True,
                div=stage.div,
                div_final=stage.div_final,
                pct_start=stage.pct_start,
                moms=stage.moms,
                wd=stage.wd,
            )
        ]
    assert isinstance(stage, FitStage)
    return [Phase("fit", stage.epochs, tuple(group_lrs(stage.lr)), stage.freeze, False, moms=stage.moms, wd=stage.wd)]


def progress(epoch: int, batch: int, n_batches: int, n_epochs: int) -> float:
    """fastai's pct_train before a batch: epoch/n_epochs plus 1/(n_batches * n_epochs) per batch."""
    return (epoch + batch / n_batches) / n_epochs
