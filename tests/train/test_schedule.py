"""Schedules against fastai's formulas, and the phases each stage becomes."""

from __future__ import annotations

import math

import pytest

from imgcls.spec.train import FineTuneStage, FitOneCycleStage, FitStage
from imgcls.train.schedule import combined_cos, group_lrs, progress, sched_cos, stage_phases


def fastai_cos(start: float, end: float, pos: float) -> float:
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


@pytest.mark.parametrize("pos", [0.0, 0.1, 0.25, 0.3, 0.5, 0.9, 0.999])
def test_one_cycle_lr_and_momentum_match_fastai(pos: float) -> None:
    (phase,) = stage_phases(FitOneCycleStage(schedule="fit_one_cycle", lr_max=1e-3))
    if pos < 0.25:
        lr, mom = fastai_cos(1e-3 / 25, 1e-3, pos / 0.25), fastai_cos(0.95, 0.85, pos / 0.25)
    else:
        lr, mom = fastai_cos(1e-3, 1e-3 / 1e5, (pos - 0.25) / 0.75), fastai_cos(0.85, 0.95, (pos - 0.25) / 0.75)
    assert phase.lrs[2] * phase.lr_scale(pos) == pytest.approx(lr, rel=1e-12)
    assert phase.momentum(pos) == pytest.approx(mom, rel=1e-12)


def test_one_cycle_known_values() -> None:
    (phase,) = stage_phases(FitOneCycleStage(schedule="fit_one_cycle", lr_max=1e-3))
    assert phase.lr_scale(0.0) == pytest.approx(1 / 25)
    assert phase.lr_scale(0.25) == pytest.approx(1.0)
    assert phase.momentum(0.25) == pytest.approx(0.85)
    # fastai, 6-batch fit with pct_start 0.3 and div 5 (fine_tune's second phase): the last batch
    # (pos 5/6) sees 1.33e-4 for lr_max 1e-3, so the schedule never quite reaches lr_max / div_final.
    (short,) = stage_phases(FitOneCycleStage(schedule="fit_one_cycle", lr_max=1e-3, div=5, pct_start=0.3))
    assert 1e-3 * short.lr_scale(5 / 6) == pytest.approx(1.33e-4, abs=5e-7)


def test_progress_is_fastais_pct_train() -> None:
    assert progress(0, 0, 10, 2) == 0.0
    assert progress(1, 5, 10, 2) == pytest.approx(0.75)


def test_sched_cos_endpoints() -> None:
    assert sched_cos(2.0, 4.0, 0.0) == 2.0 and sched_cos(2.0, 4.0, 1.0) == pytest.approx(4.0)
    assert combined_cos(0.5, 1, 2, 3, 0.5) == pytest.approx(2.0)


def test_lr_ranges_are_geometric_like_fastai_slices() -> None:
    assert group_lrs(1e-3) == [1e-3, 1e-3, 1e-3]
    assert group_lrs((1e-5, 1e-3)) == pytest.approx([1e-5, 1e-4, 1e-3])


def test_fine_tune_phases_and_group_learning_rates() -> None:
    frozen, unfrozen = stage_phases(FineTuneStage(schedule="fine_tune", epochs=3, base_lr=2e-3))
    assert frozen.frozen and frozen.epochs == 1 and frozen.pct_start == 0.99 and frozen.div == 25
    assert frozen.lrs == pytest.approx((2e-4, 2e-4, 2e-3))  # slice(base_lr): body groups at base_lr/10
    assert not unfrozen.frozen and unfrozen.epochs == 3 and unfrozen.pct_start == 0.3 and unfrozen.div == 5
    assert unfrozen.lrs == pytest.approx((1e-5, 1e-4, 1e-3))  # slice(base_lr/2/100, base_lr/2)
    assert unfrozen.lrs[2] * unfrozen.lr_scale(0.0) == pytest.approx(1e-3 / 5)  # first LR = 1e-3/5
    (only,) = stage_phases(FineTuneStage(schedule="fine_tune", freeze_epochs=0))
    assert not only.frozen


def test_fit_is_constant() -> None:
    (phase,) = stage_phases(FitStage(schedule="fit", lr=(1e-4, 1e-2)))
    assert not phase.one_cycle and phase.lr_scale(0.7) == 1.0 and phase.lrs == pytest.approx((1e-4, 1e-3, 1e-2))
