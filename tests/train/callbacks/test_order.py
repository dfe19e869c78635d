"""The order in which hooks fire: the ground truth for anyone writing a callback."""

from __future__ import annotations

from pathlib import Path

from train.helpers import make_state, run_fit

from imgcls.train.callbacks.base import HOOKS, Callback
from imgcls.train.callbacks.gradients import GradientAccumulation
from imgcls.train.state import TrainState


class Recorder(Callback):
    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattribute__(self, attribute: str):  # type: ignore[no-untyped-def]
        if attribute in HOOKS:
            calls = object.__getattribute__(self, "calls")

            def record(state: TrainState) -> None:
                calls.append(f"{attribute}:{state.position.epoch}.{state.position.batch}")

            return record
        return object.__getattribute__(self, attribute)


def test_hooks_fire_in_order(tmp_path: Path) -> None:
    recorder = Recorder()
    run_fit(make_state(tmp_path, epochs=2), [recorder])
    batch = ["on_batch_start:{e}.{b}", "on_before_step:{e}.{b}", "on_batch_end:{e}.{n}"]
    expected = ["on_fit_start:0.0"]
    for epoch in range(2):
        expected.append(f"on_epoch_start:{epoch}.0")
        for number in range(3):
            expected += [c.format(e=epoch, b=number, n=number + 1) for c in batch]
        expected.append(f"on_epoch_end:{epoch + 1}.0")  # the position has moved to the next epoch
    expected.append("on_fit_end:2.0")
    assert recorder.calls == expected


def test_skipped_steps_do_not_fire_before_step(tmp_path: Path) -> None:
    recorder = Recorder()
    state = make_state(tmp_path, epochs=1)
    run_fit(state, [GradientAccumulation(n_acc=8), recorder])  # bs 4: step every 2nd batch
    steps = [c for c in recorder.calls if c.startswith("on_before_step")]
    assert steps == ["on_before_step:0.1"]
    assert state.position.step == 1


def test_callbacks_sort_by_order() -> None:
    from imgcls.train.callbacks import CallbackList
    from imgcls.train.callbacks.mix import MixUp
    from imgcls.train.callbacks.tracking import EarlyStopping

    ordered = CallbackList([EarlyStopping(), MixUp(), GradientAccumulation()])
    assert [cb.name for cb in ordered] == ["mixup", "gradient_accumulation", "early_stopping"]
