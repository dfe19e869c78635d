"""The loop's guards: NaN losses stop it with advice; Ctrl-C stops it between batches."""

from __future__ import annotations

from pathlib import Path

import pytest
from train.helpers import SyntheticBatches, make_state, run_fit

from imgcls.errors import TrainingError, TrainingInterrupted
from imgcls.train.callbacks.base import Callback
from imgcls.train.state import TrainState


def test_nan_loss_stops_with_advice(tmp_path: Path) -> None:
    state = make_state(tmp_path, lr=1e9)
    with pytest.raises(TrainingError) as caught:
        run_fit(state, [], SyntheticBatches(n=20))
    assert "became nan" in str(caught.value) or "became inf" in str(caught.value)
    assert caught.value.hint is not None and "learning rate" in caught.value.hint


class PressCtrlC(Callback):
    """Simulates Ctrl-C during batch 2 of epoch 1."""

    name = "press"

    def on_batch_start(self, state: TrainState) -> None:
        if (state.position.epoch, state.position.batch) == (1, 1):
            import os
            import signal

            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_stops_at_the_next_batch_boundary(tmp_path: Path) -> None:
    state = make_state(tmp_path, epochs=3)
    with pytest.raises(TrainingInterrupted, match="in stage 1, phase 1 fit_one_cycle, epoch 2, after batch 2$"):
        run_fit(state, [PressCtrlC()])
    # the interrupted batch was finished; the message numbers the epoch from 1, the position from 0
    assert (state.position.epoch, state.position.batch) == (1, 2)


def test_training_reduces_the_loss(tmp_path: Path) -> None:
    state = make_state(tmp_path, epochs=8, lr=1e-2)
    losses = []

    class Track(Callback):
        name = "track"

        def on_epoch_end(self, state: TrainState) -> None:
            losses.append(state.metrics["train_loss"])

    run_fit(state, [Track()])
    assert losses[-1] < losses[0] * 0.7
