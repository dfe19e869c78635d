"""Each callback against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_spec
from train.helpers import make_state, run_fit

from imgcls.errors import SpecError
from imgcls.spec.load import spec_from_dict
from imgcls.spec.train import MixUpSpec
from imgcls.train.callbacks import CALLBACKS, CallbackContext, build_callbacks
from imgcls.train.callbacks.gradients import GradientAccumulation, GradientClip
from imgcls.train.callbacks.mix import CutMix, MixUp
from imgcls.train.callbacks.tracking import EarlyStopping, SaveBest
from imgcls.train.state import TrainState


def _batch_state(tmp_path: Path) -> TrainState:
    state = make_state(tmp_path)
    state.xb = torch.arange(4 * 3 * 2 * 2, dtype=torch.float32).view(4, 3, 2, 2)
    state.yb = torch.tensor([0, 1, 2, 0])
    state.batch_seed = 11
    return state


def test_mixup_against_hand_computed_values(tmp_path: Path) -> None:
    state = _batch_state(tmp_path)
    x, y = state.xb.clone(), torch.nn.functional.one_hot(state.yb, 3).float()
    rng = np.random.default_rng([11, 20])  # the callback's draws for batch seed 11
    lam = rng.beta(0.4, 0.4, size=4)
    lam = np.maximum(lam, 1 - lam)
    perm = rng.permutation(4)
    MixUp(0.4).on_batch_start(state)
    for i in range(4):
        assert lam[i] >= 0.5
        assert torch.allclose(state.xb[i], lam[i] * x[i] + (1 - lam[i]) * x[perm[i]], atol=1e-5)
        assert torch.allclose(state.yb[i], lam[i] * y[i] + (1 - lam[i]) * y[perm[i]], atol=1e-6)
    assert torch.allclose(state.yb.sum(dim=1), torch.ones(4))


def test_cutmix_box_and_lambda(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    state.xb = torch.stack([torch.full((3, 10, 10), float(i)) for i in range(4)])
    labels = torch.tensor([0, 1, 2, 0])
    state.yb = labels.clone()
    state.batch_seed = 5
    rng = np.random.default_rng([5, 21])  # the callback's draws: lambda, box centre, permutation
    rng.beta(1.0, 1.0), rng.integers(0, 10), rng.integers(0, 10)
    perm = rng.permutation(4)
    CutMix(1.0).on_batch_start(state)
    onehot = torch.nn.functional.one_hot(labels, 3).float()
    for i in range(4):
        box = state.xb[i, 0] == float(perm[i])
        if perm[i] == i:
            continue
        kept = 1 - float(box.float().mean())
        assert torch.equal(state.xb[i, 0][~box], torch.full_like(state.xb[i, 0][~box], float(i)))
        expected = kept * onehot[i] + (1 - kept) * onehot[perm[i]]
        assert torch.allclose(state.yb[i], expected, atol=1e-6)


def test_gradient_accumulation_counts_samples(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    callback = GradientAccumulation(n_acc=10)
    skips = []
    for _ in range(5):
        state.xb = torch.zeros(4, 3, 2, 2)
        callback.on_batch_start(state)
        skips.append(state.skip_step)
        assert state.loss_factor == pytest.approx(0.4)
    assert skips == [True, True, False, True, True]  # 4, 8, 12 >= 10 -> step; then 4, 8


def test_gradient_clip(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    for p in state.model.parameters():
        p.grad = torch.full_like(p, 10.0)
    GradientClip(max_norm=1.0).on_before_step(state)
    total = torch.sqrt(sum((p.grad**2).sum() for p in state.model.parameters()))  # type: ignore[misc]
    assert float(total) == pytest.approx(1.0, rel=1e-4)


def test_save_best_and_early_stopping_track_the_monitor(tmp_path: Path) -> None:
    written: list[tuple[str, float]] = []
    save = SaveBest(lambda kind, s: written.append((kind, s.metrics["valid_loss"])))
    stop = EarlyStopping(monitor="accuracy", patience=2)
    state = make_state(tmp_path)
    stop.on_fit_start(state)
    for loss, acc in [(1.0, 0.5), (0.8, 0.6), (0.9, 0.6), (0.7, 0.55)]:
        state.metrics = {"valid_loss": loss, "accuracy": acc}
        save.on_epoch_end(state)
        stop.on_epoch_end(state)
    assert written == [("best", 1.0), ("best", 0.8), ("best", 0.7)]
    assert state.stop  # accuracy did not beat 0.6 for two epochs
    state.metrics = {"accuracy": 1.0}
    with pytest.raises(SpecError, match="did you mean 'accuracy'"):
        SaveBest(lambda k, s: None, monitor="acuracy").on_epoch_end(state)


def test_early_stopping_ends_the_phase(tmp_path: Path) -> None:
    state = make_state(tmp_path, epochs=5)
    run_fit(state, [EarlyStopping(monitor="valid_loss", patience=1)])  # valid_loss is constant
    assert state.position.epochs_done == 2


def test_registry_matches_the_spec_and_save_best_is_always_there(tmp_path: Path) -> None:
    from typing import get_args

    from imgcls.spec.train import Callback as CallbackSpec

    union = get_args(CallbackSpec)[0]  # Annotated[Annotated[U, ...], ...] flattens to Annotated[U, ...]
    names = {get_args(m.model_fields["name"].annotation)[0] for m in get_args(union)}
    assert names == set(CALLBACKS.names())
    ctx = CallbackContext(tmp_path, lambda k, s: None, 10, spec_from_dict(tiny_spec("demo:folder")))
    built = build_callbacks([MixUpSpec(name="mixup")], ctx)
    assert [type(cb) for cb in built] == [MixUp, SaveBest]
    with pytest.raises(SpecError, match="valid callback names: cutmix, early_stopping"):
        CALLBACKS.get("mixupp")
