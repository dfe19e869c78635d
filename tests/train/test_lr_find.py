"""lr-find: fastai's suggestion functions on curves whose answers are known, the recording loop, and a test
run that leaves the model exactly as it found it."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import tiny_spec
from torch import nn

from imgcls.augment.loader import DeviceBatch
from imgcls.errors import TrainingError
from imgcls.models.factory import create_body
from imgcls.spec.load import spec_from_dict
from imgcls.targets.regression import Regression
from imgcls.train import lr_find as lr_find_module
from imgcls.train.losses import Loss
from imgcls.train.lr_find import (
    LRFindOptions,
    exponential_lr,
    lr_find,
    minimum,
    run_range_test,
    slide,
    steep,
    suggest,
    suggestion_points,
    valley,
)
from imgcls.train.runtime import Runtime
from imgcls.train.schedule import Phase
from imgcls.train.state import Position, TrainState

LRS = [float(x) for x in 10 ** np.linspace(-7, 1, 40)]  # evenly spaced in log(lr)


def f32(value: float) -> float:
    """fastai computes the suggestions on float32 tensors, so the answers are float32 learning rates."""
    return float(np.float32(value))


# --- suggestions ------------------------------------------------------------------------------------------------


def test_minimum_is_a_tenth_of_the_lr_at_the_lowest_loss() -> None:
    losses = [3.0 - 0.1 * i for i in range(18)] + [1.5 + 0.2 * i for i in range(22)]  # lowest: index 17
    suggestion = minimum(LRS, losses)
    assert suggestion.lr == pytest.approx(f32(LRS[17]) / 10, rel=1e-12)
    assert suggestion.point == pytest.approx((f32(LRS[17]), f32(1.3)))  # marked at the minimum itself


def test_steep_is_the_steepest_descent_per_log_lr() -> None:
    losses = [2.0 - 0.01 * i for i in range(40)]
    losses[13:] = [v - 0.5 for v in losses[13:]]  # the one big drop: from index 12 to 13
    assert steep(LRS, losses).lr == f32(LRS[12])
    # Not the biggest drop but the biggest drop per unit of log(lr): 0.4 over a decade < 0.25 over a doubling.
    assert steep([1e-3, 1e-2, 2e-2, 1e-1], [1.0, 0.6, 0.35, 0.3]).lr == f32(1e-2)


def test_valley_takes_a_point_early_in_the_longest_decreasing_run() -> None:
    # Decreasing over indices 0..6: lds[6] = 7, max_start = 6 - 7 = -1 (fastai's off-by-one start),
    # sections = 7/3, idx = -1 + int(2.33) + int(1.17) = 2.
    losses = [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 5.0, 6.0, 7.0]
    assert valley(LRS[:10], losses).lr == f32(LRS[2])
    # Not contiguous: 5 > 4 > 3 > 2 (skipping the 1) is the longest, ending at index 4: max_start 0, idx 0+1+0.
    assert valley(LRS[:5], [5.0, 1.0, 4.0, 3.0, 2.0]).lr == f32(LRS[1])
    # A flat curve has no decreasing pair: index 0.
    assert valley(LRS[:6], [1.0] * 6).lr == f32(LRS[0])


def test_slide_walks_left_until_the_gradients_at_both_ends_agree() -> None:
    # Flat up to index 29, then a parabola: np.gradient is 0 up to index 28 and 0.05 at 29. The window (r, l)
    # starts at (39, 24) and steps left while |g[r] - g[l]| > 0.005, i.e. while r >= 29: the last left end is 14.
    losses = [1.0] * 30 + [1.0 + 0.1 * (i - 29) ** 2 for i in range(30, 40)]
    suggestion = slide(LRS, losses)
    assert suggestion.lr == f32(LRS[14])
    assert suggestion.point[1] == pytest.approx(1.0)
    # Already agreeing at the first window: its left end, lrs[-16].
    assert slide(LRS, [1.0] * 40).lr == f32(LRS[-16])
    assert math.isnan(slide(LRS[:15], [1.0] * 15).lr)  # needs lr_diff + 1 = 16 points


def test_suggestion_points_drop_the_ends_and_stop_at_the_first_nan() -> None:
    lrs, losses = [float(i) for i in range(100)], [float(i) for i in range(100)]
    kept_lrs, kept_losses = suggestion_points(lrs, losses, num_it=100)
    assert kept_lrs[0] == 10 and kept_lrs[-1] == 94 and kept_losses == kept_lrs
    losses[50] = losses[70] = math.nan
    kept_lrs, _ = suggestion_points(lrs, losses, num_it=100)
    assert kept_lrs == [float(i) for i in range(10, 50)]
    with pytest.raises(TrainingError, match="too few"):
        suggest(lrs[:12], losses[:12], num_it=100)


# --- the recording loop -----------------------------------------------------------------------------------------


class ConstantModel(nn.Module):
    """Outputs 0 whatever the weights, so the losses are the (known) squared targets and never change."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * 0.0 * self.weight


class FakeBatches:
    """n batches per epoch; batch k of the whole test (across epochs) has MSE loss `losses[k]`."""

    def __init__(self, n: int, losses: list[float]) -> None:
        self.n, self.losses, self.epochs, self.served = n, losses, [], 0

    def set_epoch(self, epoch_key: int, start_batch: int = 0) -> None:
        self.epochs.append(epoch_key)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[DeviceBatch]:
        for _ in range(self.n):
            target = math.sqrt(self.losses[self.served % len(self.losses)])
            self.served += 1
            yield DeviceBatch(torch.zeros(4, 3), torch.full((4, 1), target), torch.arange(4), 0)


CPU = Runtime(torch.device("cpu"), "fp32", False, False)


def _record(batches: FakeBatches, **options: Any) -> Any:
    model = ConstantModel()
    optimizer = torch.optim.SGD([{"params": model.parameters(), "base_lr": 1.0}], lr=1.0, momentum=0.9)
    phase = Phase("lr_find", 1, (1.0,), False, False)
    state = TrainState(model, optimizer, Loss("mse"), CPU, Regression(1), Path("."), phase, "lr_find", Position())
    curve = run_range_test(state, batches, LRFindOptions(**options), [])  # type: ignore[arg-type]
    return curve, optimizer


def test_the_schedule_is_exponential_over_num_it_batches_across_epochs() -> None:
    batches = FakeBatches(7, [1.0])
    curve, optimizer = _record(batches, num_it=20)
    assert curve.lrs == pytest.approx([1e-7 * (10 / 1e-7) ** (i / 20) for i in range(20)], rel=1e-12)
    assert curve.lrs[0] == 1e-7 and exponential_lr(1e-7, 10, 1.0) == pytest.approx(10)
    assert curve.losses == pytest.approx([1.0] * 20)  # the debiased EMA of a constant is that constant
    assert batches.epochs == [0, 1, 2] and batches.served == 20  # 20 // 7 + 1 epochs, stopped after 20 batches
    assert {group["lr"] for group in optimizer.param_groups} == {curve.lrs[-1]}
    assert "all 20 batches" in curve.stop_reason


def test_the_recorded_loss_is_fastais_debiased_smooth_loss() -> None:
    raw = [4.0, 1.0, 9.0, 0.25, 2.0, 3.0]
    curve, _ = _record(FakeBatches(6, raw), num_it=6)
    expected, value = [], 0.0
    for count, loss in enumerate(raw, start=1):
        value = 0.98 * value + 0.02 * loss
        expected.append(value / (1 - 0.98**count))
    assert curve.losses == pytest.approx(expected, rel=1e-6)


def test_stops_once_the_smoothed_loss_exceeds_four_times_its_best() -> None:
    raw = [1.0] * 10 + [1000.0] * 40
    curve, _ = _record(FakeBatches(50, raw), num_it=50)
    # smoothed after batch 11: (0.98^10 * 0.02 * ... ) computed exactly as the loop does
    value, best, stop = 0.0, math.inf, None
    for count, loss in enumerate(raw, start=1):
        value = 0.98 * value + 0.02 * loss
        smooth = value / (1 - 0.98**count)
        best = min(best, smooth)
        if smooth > 4 * best:
            stop = count
            break
    assert stop == 11 and len(curve.lrs) == 11  # the divergent batch is recorded, as fastai does
    assert "4x" in curve.stop_reason
    no_stop, _ = _record(FakeBatches(50, raw), num_it=50, stop_div=False)
    assert len(no_stop.lrs) == 50


def test_short_data_ends_after_num_it_over_len_plus_one_epochs() -> None:
    batches = FakeBatches(2, [1.0])
    curve, _ = _record(batches, num_it=3)
    # the schedule runs over max(3, 6) = 6 batches, but only 3 // 2 + 1 = 2 epochs of 2 batches are run
    assert curve.lrs == pytest.approx([1e-7 * (1e8) ** (i / 6) for i in range(4)], rel=1e-12)
    assert "ran out after 4 batches" in curve.stop_reason


# --- on a real (tiny) spec --------------------------------------------------------------------------------------


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lr_find_leaves_the_model_as_it_found_it() -> None:
    from imgcls.models.factory import create_model

    spec = spec_from_dict(tiny_spec("demo:folder@0.02"))
    model = create_model(spec.model, 5)
    model.eval()
    model.head[-1].weight.requires_grad_(False)  # an unusual state, to see that it is kept
    before, flags = _state(model), [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()
    result = lr_find(spec, LRFindOptions(num_it=20), model=model)
    assert len(result.curve.lrs) >= 10 and not result.frozen
    assert len({round(v, 6) for v in result.curve.losses}) > 5  # it did train
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and batch-norm statistics
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not model.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert [s.name for s in result.suggestions] == ["minimum", "steep", "valley", "slide"]


def test_a_fine_tune_from_a_weights_file_is_tested_frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    raw = tiny_spec("demo:folder@0.02")
    raw["train"]["stages"] = [{"schedule": "fine_tune", "epochs": 1}]
    body = create_body(spec_from_dict(raw).model)
    weights = tmp_path / "body.safetensors"
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(weights))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    raw["model"]["weights"] = str(weights)
    spec = spec_from_dict(raw)
    seen: list[dict[str, bool]] = []
    original = lr_find_module.run_range_test

    def spy(state: TrainState, *args: Any, **kwargs: Any) -> Any:
        seen.append({name: p.requires_grad for name, p in state.model.named_parameters()})
        return original(state, *args, **kwargs)

    monkeypatch.setattr(lr_find_module, "run_range_test", spy)
    frozen = lr_find(spec, LRFindOptions(num_it=12))
    unfrozen = lr_find(spec, LRFindOptions(num_it=12, unfrozen=True))
    assert frozen.frozen and not unfrozen.frozen
    trainable = seen[0]
    assert trainable["body.conv1.0.weight"] is False  # a convolution of the body: frozen
    assert trainable["body.bn1.weight"] is True  # batch norm keeps training (train_bn)
    assert all(trainable[name] for name in trainable if name.startswith("head."))
    assert all(seen[1].values())
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest  # the file is untouched


def run_cli(*args: str) -> int:
    from imgcls.cli import app

    code = app(list(args), standalone_mode=False, prog_name="imgcls")
    return int(code or 0)


def test_lr_find_command_writes_the_curve_and_the_suggestions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_spec("demo:folder@0.02")))
    out = tmp_path / "lr"
    assert run_cli("lr-find", str(config), "--num-it", "30", "--out", str(out), "--quiet") == 0
    printed = capsys.readouterr().out
    for name in ("minimum", "steep", "valley", "slide"):
        assert name in printed
    frame = pd.read_csv(out / "lr_find.csv")
    summary = json.loads((out / "lr_find.json").read_text())
    assert list(frame.columns) == ["lr", "loss", "used_for_suggestions"]
    assert len(frame) == summary["batches"] and summary["num_it"] == 30
    assert frame["lr"].iloc[0] == pytest.approx(1e-7)
    used = frame[frame["used_for_suggestions"]]
    assert used.index[0] == 3 and used.index[-1] <= len(frame) - 6  # [num_it // 10 : -5]
    expected = suggest(frame["lr"].tolist(), frame["loss"].tolist(), 30)
    assert summary["suggestions"]["valley"] == pytest.approx(expected[2].lr, rel=1e-6)
    assert (out / "lr_find.png").stat().st_size > 10_000


def test_the_specs_training_callbacks_run_during_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """fastai runs its LR finder through the learner's own fit: MixUp stays on. Watching callbacks (save_best,
    early_stopping) stay out, since nothing is validated or saved."""
    from imgcls.train.callbacks.mix import MixUp

    raw = tiny_spec("demo:folder@0.02")
    plain = lr_find(spec_from_dict(raw), LRFindOptions(num_it=10))
    raw["callbacks"] = ["mixup", {"name": "early_stopping", "patience": 1}]
    calls: list[int] = []
    original = MixUp.on_batch_start

    def counted(self: MixUp, state: TrainState) -> None:
        calls.append(state.position.batch)
        original(self, state)

    monkeypatch.setattr(MixUp, "on_batch_start", counted)
    mixed = lr_find(spec_from_dict(raw), LRFindOptions(num_it=10))
    assert mixed.callbacks == ["mixup"] and plain.callbacks == []
    assert len(calls) == len(mixed.curve.lrs)  # once per recorded batch
    assert mixed.curve.lrs == plain.curve.lrs and mixed.curve.losses != plain.curve.losses
