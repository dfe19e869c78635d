"""The EMA of the weights: closed forms on a one-parameter model, timm's ModelEmaV3, and whole runs (validation on
the average, checkpoints, exact resume)."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import tiny_spec
from torch import nn

from imgcls.errors import TrainingInterrupted
from imgcls.spec.load import spec_from_dict
from imgcls.train.callbacks.ema import EMA
from imgcls.train.checkpoint import read_checkpoint
from imgcls.train.evaluation import compute_metrics, evaluate
from imgcls.train.folders import resume_run
from imgcls.train.loop import InterruptFlag
from imgcls.train.run import train
from imgcls.train.state import Position

# --- the average itself -------------------------------------------------------------------------------------


class OneParameter(nn.Module):
    """w, and a buffer that counts the steps: the EMA averages the one and copies the other."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.float64))


def _steps(ema: EMA, values: list[float], skipped: frozenset[int] = frozenset()) -> OneParameter:
    """Optimizer steps 1..len(values) that set w to values[step - 1], through the callback's hooks."""
    model = OneParameter()
    state: Any = SimpleNamespace(model=model, position=Position(), skip_step=False)
    ema.on_fit_start(state)
    for step, value in enumerate(values, start=1):
        with torch.no_grad():
            model.w.fill_(value)
            model.seen.fill_(step)
        state.skip_step = step in skipped
        state.position.step = step - len([s for s in skipped if s <= step])
        ema.on_batch_end(state)
    return model


def _average(ema: EMA) -> OneParameter:
    assert isinstance(ema.module, OneParameter)
    return ema.module


def test_the_average_after_k_steps_equals_the_closed_form() -> None:
    d, values = 0.9, [float(k * k) for k in range(1, 7)]
    ema = EMA(decay=d)
    _steps(ema, values)
    # update 1 copies (d = 0), updates 2..k: ema = d * ema + (1 - d) * w
    # => ema_k = d^(k-1) w_1 + (1 - d) * sum_{i=2..k} d^(k-i) w_i
    k = len(values)
    closed = d ** (k - 1) * values[0] + (1 - d) * sum(d ** (k - i) * values[i - 1] for i in range(2, k + 1))
    assert float(_average(ema).w) == pytest.approx(closed, rel=1e-12)
    assert float(_average(ema).seen) == k  # buffers are copied, not averaged


def test_every_n_steps_and_skipped_steps() -> None:
    d, values = 0.8, [1.0, 2.0, 3.0, 5.0, 8.0, 13.0]
    ema = EMA(decay=d, every=2)
    _steps(ema, values)
    # updates at steps 2, 4, 6 (the 1st, 2nd and 3rd update): w = 2, 5, 13
    assert float(_average(ema).w) == pytest.approx(d * d * 2.0 + (1 - d) * (d * 5.0 + 13.0), rel=1e-12)
    accumulating = EMA(decay=d)
    _steps(accumulating, [1.0, 4.0, 9.0], skipped=frozenset({2}))  # no optimizer step at batch 2: no update
    assert float(_average(accumulating).w) == pytest.approx(d * 1.0 + (1 - d) * 9.0, rel=1e-12)


def test_warmup_with_power_1_is_the_running_mean() -> None:
    values = [3.0, -1.0, 4.0, 1.0, -5.0, 9.0, 2.0, 6.0]
    for k in range(1, len(values) + 1):
        # d_k = 1 - 1/k is the running mean's update while it stays below decay (1 - 1/8 < 0.95)
        ema = EMA(decay=0.95, warmup=True, warmup_power=1.0)
        _steps(ema, values[:k])
        assert float(_average(ema).w) == pytest.approx(sum(values[:k]) / k, rel=1e-12)


def test_decay_schedule_is_timms() -> None:
    from timm.utils.model_ema import ModelEmaV3

    for warmup in (False, True):
        ours = EMA(decay=0.999, warmup=warmup)
        theirs = ModelEmaV3(nn.Linear(1, 1), decay=0.999, use_warmup=warmup)
        assert [ours.decay_at(k) for k in range(1, 400)] == [theirs.get_decay(k) for k in range(1, 400)]


def test_weights_and_buffers_follow_timms_model_ema_v3() -> None:
    from timm.utils.model_ema import ModelEmaV3

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 8, 8))  # materialise the lazy layer
    theirs = ModelEmaV3(model, decay=0.99, use_warmup=True, exclude_buffers=True)
    ours = EMA(decay=0.99, warmup=True)
    state: Any = SimpleNamespace(model=model, position=Position(), skip_step=False)
    ours.on_fit_start(state)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    for step in range(1, 13):
        model(torch.randn(4, 3, 8, 8, generator=generator)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        state.position.step = step
        ours.on_batch_end(state)
        theirs.update(model, step=step)
    assert ours.module is not None
    for (name, mine), reference in zip(
        ours.module.state_dict().items(), theirs.module.state_dict().values(), strict=True
    ):
        assert torch.allclose(mine, reference, rtol=0, atol=1e-7), name


# --- whole runs ------------------------------------------------------------------------------------------------

DATA = "demo:folder@0.05"  # 5 classes x 15 images, every 5th for validation: 7 batches of 8 per epoch


def _spec(validate: str, **overrides: Any) -> Any:
    raw = tiny_spec(DATA, **overrides)
    raw["model"]["head"] = {"lin_ftrs": [16], "ps": 0.5}  # dropout: the resume must restore the global generator
    ema = {"name": "ema", "decay": 0.9, "warmup": True, "validate": validate}
    raw["callbacks"] = [ema, *raw.get("callbacks", [])]
    return spec_from_dict(raw)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def _valid_loss(run: Path, state: dict[str, torch.Tensor]) -> float:
    """valid_loss of `state` evaluated in one process, with the run's pipeline."""
    from imgcls.evaluate.load import load_run

    loaded = load_run(run, "last")
    model = loaded.pipeline.trained_model(state, "test")
    predictions = evaluate(model, loaded.pipeline.batches("valid"), loaded.runtime)
    return compute_metrics(predictions, loaded.pipeline.loss, loaded.pipeline.metrics)["valid_loss"]


def _ema_state(checkpoint: Any) -> dict[str, torch.Tensor]:
    return {k.removeprefix("ema."): v for k, v in checkpoint.callback_tensors.items() if k.startswith("ema.")}


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(_spec("ema"), tmp_path_factory.mktemp("runs") / "ema", quiet=True)


def test_validation_and_checkpoints_use_the_average(ema_run: Path) -> None:
    with open(ema_run / "metrics.csv", newline="") as handle:
        assert next(csv.reader(handle)) == [
            "stage",
            "phase",
            "epoch",
            "train_loss",
            "valid_loss",
            "accuracy",
            "lr",
            "seconds",
        ]
    last = read_checkpoint(ema_run / "checkpoints" / "last.safetensors")
    average = _ema_state(last)
    assert average.keys() == last.model_state.keys() == last.raw_state.keys()
    assert all(torch.equal(last.model_state[k], average[k]) for k in average)  # model. = the average
    assert last.training_state is last.raw_state  # training resumes from the trained weights
    assert any(not torch.equal(last.raw_state[k], average[k]) for k in average if "running" not in k)
    # The epoch row's valid_loss is the average's, not the trained weights'.
    row = _rows(ema_run)[-1]
    assert _valid_loss(ema_run, average) == pytest.approx(float(row["valid_loss"]), abs=1e-6)
    assert _valid_loss(ema_run, last.raw_state) != pytest.approx(float(row["valid_loss"]), abs=1e-4)
    best = read_checkpoint(ema_run / "checkpoints" / "best.safetensors")
    assert not best.raw_state and not best.callback_tensors  # best is for predicting: the average only
    assert _valid_loss(ema_run, best.model_state) == pytest.approx(float(best.record.metrics["valid_loss"]), abs=1e-6)


def test_resume_gives_the_average_of_an_uninterrupted_run(
    ema_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = InterruptFlag.check

    def press_once(self: InterruptFlag, state: Any) -> None:
        if (state.position.epoch, state.position.batch) == (1, 3) and not getattr(self, "pressed", False):
            self.pressed = True  # type: ignore[attr-defined]
            self.requested = True
        original(self, state)

    monkeypatch.setattr(InterruptFlag, "check", press_once)
    with pytest.raises(TrainingInterrupted):
        train(_spec("ema"), tmp_path / "run", quiet=True)
    monkeypatch.setattr(InterruptFlag, "check", original)
    spec, checkpoint = resume_run(tmp_path / "run", None)
    assert checkpoint is not None and checkpoint.record.position.batch == 3
    train(spec, tmp_path / "run", quiet=True, resume=checkpoint)
    assert _rows(tmp_path / "run") == _rows(ema_run)
    resumed = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors")
    uninterrupted = read_checkpoint(ema_run / "checkpoints" / "last.safetensors")
    for key, value in uninterrupted.callback_tensors.items():
        assert torch.equal(resumed.callback_tensors[key], value), key  # bit-exact on the CPU
    for key, value in uninterrupted.raw_state.items():
        assert torch.equal(resumed.raw_state[key], value), key


def test_validate_both_adds_ema_columns_and_best_follows_the_monitor(tmp_path: Path) -> None:
    spec = _spec("both", callbacks=[{"name": "save_best", "monitor": "ema_accuracy"}])
    run = train(spec, tmp_path / "both", quiet=True)
    with open(run / "metrics.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header[4:8] == ["valid_loss", "accuracy", "ema_valid_loss", "ema_accuracy"]
    last = read_checkpoint(run / "checkpoints" / "last.safetensors")
    assert not last.raw_state  # last's model. are the trained weights; the average is the callback's
    row = _rows(run)[-1]
    assert _valid_loss(run, last.model_state) == pytest.approx(float(row["valid_loss"]), abs=1e-6)
    assert _valid_loss(run, _ema_state(last)) == pytest.approx(float(row["ema_valid_loss"]), abs=1e-6)
    best = read_checkpoint(run / "checkpoints" / "best.safetensors")
    assert _valid_loss(run, best.model_state) == pytest.approx(float(best.record.metrics["ema_valid_loss"]), abs=1e-6)


def test_validate_model_keeps_the_plain_columns_and_weights(tmp_path: Path) -> None:
    run = train(
        _spec("model", **{"train__stages": [{"schedule": "fit_one_cycle", "epochs": 1}]}), tmp_path / "m", quiet=True
    )
    last = read_checkpoint(run / "checkpoints" / "last.safetensors")
    assert not last.raw_state and _ema_state(last).keys() == last.model_state.keys()
    assert _valid_loss(run, last.model_state) == pytest.approx(float(_rows(run)[-1]["valid_loss"]), abs=1e-6)
