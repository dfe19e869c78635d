"""lr-find --from RUN: the range test starts from a trained run's weights, with its normalization and stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from trained_runs import copy_run, run_cli, trained_run

from imgcls.evaluate.load import load_run
from imgcls.train.checkpoint import read_checkpoint


def test_the_range_test_starts_from_the_runs_weights(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(trained_run("category", tmp_path_factory), tmp_path)
    before = read_checkpoint(run / "checkpoints" / "best.safetensors").model_state
    assert run_cli("lr-find", "--from", str(run), "--num-it", "12", "--no-stop-div") == 0
    printed = capsys.readouterr().out
    assert f"at 32x32 px (stage 1), lr 1e-07 -> 1e+01, the whole network, from {run}'s best weights" in printed
    summary = json.loads((run / "lr_find" / "lr_find.json").read_text())
    assert summary["from_run"] == str(run) and summary["frozen"] is False and summary["batches"] == 12
    # the first recorded loss is the run's model on the first training batch (lr 1e-7 has not moved it yet)
    loaded = load_run(run)
    batches = loaded.pipeline.stage_loaders(0).train
    batches.set_epoch(0)
    first = next(iter(batches))
    model = loaded.model.train()
    with torch.no_grad(), loaded.pipeline.runtime.autocast():  # a range test trains in the training precision
        expected = float(loaded.pipeline.loss(model(first.images), first.targets))
    assert summary_first_loss(run) == pytest.approx(expected, rel=1e-4)
    after = read_checkpoint(run / "checkpoints" / "best.safetensors").model_state
    assert all(torch.equal(before[k], after[k]) for k in before)  # the run is left as it was
    assert run_cli("lr-find", "--from", str(tmp_path / "nowhere")) == 4
    assert run_cli("lr-find") == 2  # neither a spec nor a run
    assert "give a spec file, or --from RUN" in capsys.readouterr().err


def summary_first_loss(run: Path) -> float:
    import pandas as pd

    return float(pd.read_csv(run / "lr_find" / "lr_find.csv")["loss"].iloc[0])
