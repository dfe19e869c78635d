"""Whole runs on tiny data: the run folder, determinism, exact resume, atomic checkpoints."""

from __future__ import annotations

import csv
import json
import math
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import needs_cuda, tiny_spec
from PIL import Image

import imgcls.train.checkpoint as checkpoint_module
from imgcls.errors import TrainingError, TrainingInterrupted
from imgcls.evaluate.load import load_run
from imgcls.spec import dump_spec, load_spec
from imgcls.spec.load import spec_from_dict
from imgcls.train.callbacks.base import Callback
from imgcls.train.callbacks.logging import SaveLast
from imgcls.train.checkpoint import read_checkpoint, write_checkpoint
from imgcls.train.evaluation import compute_metrics, evaluate
from imgcls.train.folders import resume_run
from imgcls.train.loop import InterruptFlag
from imgcls.train.record import RunRecord, TargetRecord
from imgcls.train.run import train

DATA = "demo:folder@0.05"  # 5 classes x 15 images, every 5th for validation


def _spec(**overrides: Any) -> Any:
    raw = tiny_spec(DATA, **overrides)
    raw["model"]["head"] = {"lin_ftrs": [16], "ps": 0.5}  # dropout draws from the global generator
    return spec_from_dict(raw)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(_spec(), tmp_path_factory.mktemp("runs") / "tiny", quiet=True)


def test_run_folder_explains_itself(finished: Path) -> None:
    for name in (
        "spec.yaml",
        "env.json",
        "split.json",
        "metrics.csv",
        "metrics.png",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "most_confused.csv",
        "checkpoints/last.safetensors",
        "checkpoints/best.safetensors",
    ):
        assert (finished / name).is_file(), name
    with open(finished / "metrics.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["stage", "phase", "epoch", "train_loss", "valid_loss", "accuracy", "lr", "seconds"]
    assert len(_rows(finished)) == 2
    assert load_spec(finished / "spec.yaml") == _spec().model_copy(update={"name": "tiny"})
    env = json.loads((finished / "env.json").read_text())
    assert env["packages"]["torch"] == torch.__version__.split("+")[0] or env["packages"]["torch"]
    assert {"device", "python", "git", "command"} <= env.keys()
    split = json.loads((finished / "split.json").read_text())
    assert len(split["valid_items"]) == 15 and split["vocab"] == ["circle", "cross", "ring", "square", "triangle"]
    with open(finished / "confusion_matrix.csv", newline="") as handle:
        matrix = list(csv.reader(handle))
    assert len(matrix) == 6 and sum(int(v) for row in matrix[1:] for v in row[1:]) == 15
    assert Image.open(finished / "confusion_matrix.png").size[0] > 100


def test_checkpoint_holds_everything_to_resume_or_predict(finished: Path) -> None:
    last = read_checkpoint(finished / "checkpoints" / "last.safetensors")
    assert last.record.target.vocab == ["circle", "cross", "ring", "square", "triangle"]
    assert last.record.position.epochs_done == 2 and last.record.size == (32, 32)
    assert spec_from_dict(last.record.spec).name == "tiny"
    assert last.optimizer_state() is not None and "rng.cpu" in last.rng
    assert any(k.endswith("running_mean") for k in last.model_state)
    best = read_checkpoint(finished / "checkpoints" / "best.safetensors")
    assert best.optimizer_state() is None  # best is for predicting: weights and metadata only


def test_two_runs_with_one_seed_are_identical(finished: Path, tmp_path: Path) -> None:
    again = train(_spec(), tmp_path / "again", quiet=True)
    assert _rows(again) == _rows(finished)


def test_a_run_with_a_policy_and_random_erasing_trains(finished: Path, tmp_path: Path) -> None:
    spec = _spec(
        augment__policy={"kind": "rand_augment", "n": 2, "magnitude": 9},
        augment__erasing={"p": 0.5, "mode": "pixel", "max_count": 2},
    )
    run = train(spec, tmp_path / "regularized", quiet=True)
    rows = _rows(run)
    assert len(rows) == 2
    for row in rows:
        assert all(math.isfinite(float(row[key])) for key in ("train_loss", "valid_loss", "accuracy")), row
    assert [row["train_loss"] for row in rows] != [row["train_loss"] for row in _rows(finished)]
    assert load_spec(run / "spec.yaml").augment == spec.augment


def test_resume_after_ctrl_c_equals_an_uninterrupted_run(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = InterruptFlag.check

    def press_once(self: InterruptFlag, state: Any) -> None:
        if (state.position.epoch, state.position.batch) == (1, 2) and not getattr(self, "pressed", False):
            self.pressed = True  # type: ignore[attr-defined]
            self.requested = True
        original(self, state)

    monkeypatch.setattr(InterruptFlag, "check", press_once)
    with pytest.raises(TrainingInterrupted) as caught:
        train(_spec(), tmp_path / "run", quiet=True)
    assert caught.value.hint is not None and f"--resume {tmp_path / 'run'}" in caught.value.hint
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors").record.position.batch == 2
    monkeypatch.setattr(InterruptFlag, "check", original)
    spec, checkpoint = resume_run(tmp_path / "run", None)
    train(spec, tmp_path / "run", quiet=True, resume=checkpoint)
    assert _rows(tmp_path / "run") == _rows(finished)


def test_resume_after_a_kill_between_the_csv_row_and_the_checkpoint(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SaveLast.on_epoch_end

    def killed_at_second_epoch(self: SaveLast, state: Any) -> None:
        if state.position.epochs_done == 2:
            raise SystemExit("killed")  # metrics.csv has the row, the checkpoint does not
        original(self, state)

    monkeypatch.setattr(SaveLast, "on_epoch_end", killed_at_second_epoch)
    with pytest.raises(SystemExit):
        train(_spec(), tmp_path / "run", quiet=True)
    assert len(_rows(tmp_path / "run")) == 2
    monkeypatch.setattr(SaveLast, "on_epoch_end", original)
    spec, checkpoint = resume_run(tmp_path / "run", None)
    train(spec, tmp_path / "run", quiet=True, resume=checkpoint)
    assert _rows(tmp_path / "run") == _rows(finished)


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "last.safetensors"
    record = RunRecord(kind="last", spec={}, target=TargetRecord(kind="category", n_out=2, vocab=["a", "b"]))
    write_checkpoint(path, model, record.model_copy(update={"phase_name": "first"}))

    def torn(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str]) -> None:
        Path(filename).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", torn)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(path, model, record.model_copy(update={"phase_name": "second"}))
    assert read_checkpoint(path).record.phase_name == "first"


def test_checkpoints_are_never_unpickled(tmp_path: Path) -> None:
    fake = tmp_path / "evil.safetensors"
    torch.save({"x": torch.zeros(1)}, fake)  # a pickle, whatever its name says
    with pytest.raises(TrainingError, match="not a readable imgcls checkpoint"):
        read_checkpoint(fake)


def test_resume_refuses_to_change_what_is_computed(finished: Path) -> None:
    from imgcls.errors import SpecError

    with pytest.raises(SpecError, match="keeps its spec"):
        resume_run(finished, ["train.stages.0.epochs=9"])
    spec, _ = resume_run(finished, ["runtime.log_every=5"])
    assert spec.runtime.log_every == 5
    assert dump_spec(spec)  # still a valid spec


class _CtrlC(Callback):
    """Presses Ctrl-C (a real SIGINT to this process) once, after batch 2 of epoch 1."""

    def on_batch_end(self, state: Any) -> None:
        if (state.position.epoch, state.position.batch) == (1, 2):
            signal.raise_signal(signal.SIGINT)


@pytest.mark.gpu
@needs_cuda
def test_a_run_interrupted_on_cuda_loads_and_resumes_on_the_cpu(tmp_path: Path) -> None:
    """Weights, optimizer state and RNG states written on the GPU: evaluated and trained on from the CPU."""
    spec = _spec(runtime={"device": "cuda", "precision": "fp32", "log_every": 2})
    with pytest.raises(TrainingInterrupted):
        train(spec, tmp_path / "run", quiet=True, callbacks=[_CtrlC()])
    saved = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert (saved.record.position.epoch, saved.record.position.batch) == (1, 2)
    assert any(k.startswith("rng.cuda.") for k in saved.rng) and saved.optimizer_tensors
    loaded = load_run(tmp_path / "run", "last", device="cpu")
    assert {p.device.type for p in loaded.model.parameters()} == {"cpu"}
    predictions = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    assert math.isfinite(compute_metrics(predictions, loaded.pipeline.loss, loaded.pipeline.metrics)["valid_loss"])
    spec, checkpoint = resume_run(tmp_path / "run", ["runtime.device=cpu"])
    train(spec, tmp_path / "run", quiet=True, resume=checkpoint)
    rows = _rows(tmp_path / "run")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    finished = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert (
        finished.record.position.epochs_done == 2 and '"device": "cpu"' in (tmp_path / "run" / "env.json").read_text()
    )


def test_stages_phases_and_epochs_are_numbered_from_1_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two stages, the second a fine_tune of two phases: the header, the table, metrics.csv, the plot's stage
    labels and the best line all count from 1; the best line names the stage, the phase and the epoch."""
    import pandas as pd

    from imgcls.report.plots import stage_starts

    raw = tiny_spec(DATA, data__normalize="measure")
    raw["train"]["stages"] = [
        {"schedule": "fit_one_cycle", "epochs": 2, "lr_max": 3e-3},
        {"schedule": "fine_tune", "epochs": 1, "freeze_epochs": 1, "base_lr": 1e-3},
    ]
    run = train(spec_from_dict(raw), tmp_path / "staged", quiet=True)
    printed = capsys.readouterr().out
    frame = pd.read_csv(run / "metrics.csv")
    assert frame["stage"].tolist() == [1, 1, 2, 2]
    assert frame["phase"].tolist() == ["fit_one_cycle", "fit_one_cycle", "frozen", "unfrozen"]
    assert frame["epoch"].tolist() == [1, 2, 1, 1]
    for header in ("stage 1/2, phase 1/1 fit_one_cycle: 2 epoch(s)", "stage 2/2, phase 1/2 frozen: 1 epoch(s)"):
        assert header in printed
    assert "stage 2/2, phase 2/2 unfrozen: 1 epoch(s)" in printed
    table = [line.split() for line in printed.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [row[:3] for row in table] == [
        ["1", "fit_one_cycle", "1"],
        ["1", "fit_one_cycle", "2"],
        ["2", "frozen", "1"],
        ["2", "unfrozen", "1"],
    ]
    assert stage_starts(frame) == [(1, "stage 1: fit_one_cycle"), (3, "stage 2: frozen, unfrozen")]
    best = read_checkpoint(run / "checkpoints" / "best.safetensors").record
    row = int(frame["valid_loss"].idxmin())  # save_best monitors valid_loss: the best row is its minimum
    phases = {"fit_one_cycle": "1/1", "frozen": "1/2", "unfrozen": "2/2"}
    name = str(frame.loc[row, "phase"])
    epochs = {"fit_one_cycle": 2, "frozen": 1, "unfrozen": 1}[name]
    expected = (
        f"best checkpoint: stage {frame.loc[row, 'stage']}/2, phase {phases[name]} {name}, "
        f"epoch {frame.loc[row, 'epoch']}/{epochs} (row {row + 1} of metrics.csv): "
    )
    assert expected in printed and best.metrics["epoch"] == frame.loc[row, "epoch"]
    # what `normalize: measure` resolved to: printed before the first batch, saved, and what the run used
    saved = json.loads((run / "normalize.json").read_text())
    assert saved["spec"] == "measure" and best.normalizer is not None
    assert saved["mean"] == pytest.approx(best.normalizer.mean) and saved["std"] == pytest.approx(best.normalizer.std)
    means = [round(v, 4) for v in best.normalizer.mean]
    assert f"normalize: measured on 4 augmented training batches: mean {means}" in printed
    assert printed.index("normalize:") < printed.index("stage 1/2, phase 1/1")


def test_a_from_scratch_run_says_auto_means_no_normalization(finished: Path) -> None:
    saved = json.loads((finished / "normalize.json").read_text())
    assert saved == {
        "spec": "auto",
        "resolved": "auto: none (a model trained from scratch)",
        "mean": None,
        "std": None,
        "n_in": 3,
    }


def test_a_given_split_is_trained_recorded_and_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from imgcls.data.datablock import build_data
    from imgcls.data.splits import SplitIndices
    from imgcls.evaluate.load import load_run

    data = build_data(_spec().data, quiet=True)
    items = np.sort(np.concatenate([data.split.train, data.split.valid]))
    given = SplitIndices(items[items % 3 != 0], items[items % 3 == 0])  # not the spec's grandparent split
    whole = train(_spec(), tmp_path / "whole", quiet=True, split=given)
    listing = json.loads((whole / "split.json").read_text())
    assert listing["valid_items"] == [data.items.relative(int(i)) for i in given.valid]
    assert listing["train_items"] == [data.items.relative(int(i)) for i in given.train]
    loaded = load_run(whole)
    assert loaded.checkpoint.record.given_split
    assert np.array_equal(loaded.pipeline.data.split.valid, given.valid)
    original = InterruptFlag.check

    def press_once(self: InterruptFlag, state: Any) -> None:
        if (state.position.epoch, state.position.batch) == (1, 2) and not getattr(self, "pressed", False):
            self.pressed = True  # type: ignore[attr-defined]
            self.requested = True
        original(self, state)

    monkeypatch.setattr(InterruptFlag, "check", press_once)
    with pytest.raises(TrainingInterrupted):
        train(_spec(), tmp_path / "run", quiet=True, split=given)
    monkeypatch.setattr(InterruptFlag, "check", original)
    spec, checkpoint = resume_run(tmp_path / "run", None)
    train(spec, tmp_path / "run", quiet=True, resume=checkpoint)  # the split comes back from split.json
    assert _rows(tmp_path / "run") == _rows(whole)
