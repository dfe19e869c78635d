"""MLflow and W&B callbacks on tiny real runs, read back with the libraries' own readers (offline, no server)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_spec

from imgcls.errors import SpecError, TrainingInterrupted
from imgcls.spec.load import spec_from_dict
from imgcls.train.callbacks.base import Callback
from imgcls.train.callbacks.experiment_tracking import (
    PARAM_LIMIT,
    flatten,
    param_text,
    require_package,
    spec_params,
)
from imgcls.train.folders import resume_run
from imgcls.train.run import train
from imgcls.train.state import TrainState

DATA = "demo:folder@0.02"  # 5 classes x 6 images: 20 train, 10 valid


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _mlflow_spec(tmp_path: Path) -> Any:
    raw = tiny_spec(DATA)
    raw["callbacks"] = [{"name": "mlflow", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "t"}]
    return spec_from_dict(raw)


def _mlflow_runs(tmp_path: Path) -> tuple[Any, list[Any]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("t")
    return client, client.search_runs([experiment.experiment_id])


def _history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_flatten_and_truncate_against_known_answers() -> None:
    nested = {"a": {"b": [{"c": 1}, {"d": None}], "size": [224, 224], "empty": {}}, "e": "x"}
    assert flatten(nested) == {"a.b.0.c": 1, "a.b.1.d": None, "a.size": [224, 224], "a.empty": {}, "e": "x"}
    assert param_text([224, 224]) == "[224, 224]" and param_text(None) == "null" and param_text("s") == "s"
    long = param_text("x" * 7000)
    assert len(long) == PARAM_LIMIT and long.startswith("x" * 5000) and "truncated from 7000 characters" in long


def test_a_missing_tracking_package_is_a_spec_error_with_the_pip_command() -> None:
    with pytest.raises(SpecError, match="needs the no_such_tracker package") as caught:
        require_package("no_such_tracker", "no_such_tracker>=1")
    assert caught.value.hint is not None and "pip install 'no_such_tracker>=1'" in caught.value.hint


def test_mlflow_holds_the_metrics_csv_values_params_and_tags(tmp_path: Path) -> None:
    spec = _mlflow_spec(tmp_path)
    run_dir = train(spec, tmp_path / "run", quiet=True)
    client, runs = _mlflow_runs(tmp_path)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    rows = _rows(run_dir)
    for key in ("train_loss", "valid_loss", "accuracy", "lr", "epoch"):
        assert _history(client, run.info.run_id, key) == [(i + 1, float(row[key])) for i, row in enumerate(rows)]
    params = run.data.params
    assert params == spec_params(spec)
    assert params["train.stages.0.lr_max"] == "0.003" and params["model.arch"] == "xresnet_tiny"
    assert params["seed"] == "7" and params["augment.size"] == "[32, 32]"
    env = json.loads((run_dir / "env.json").read_text())
    assert run.data.tags["mlflow.source.git.commit"] == env["git"]["commit"]
    assert run.data.tags["imgcls.version"] == "0.1.0"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.csv", "metrics.png", "confusion_matrix.png", "spec.yaml", "env.json"} <= artifacts
    assert "checkpoints" not in artifacts  # log_checkpoints: false


class PressCtrlC(Callback):
    """Send this process a real SIGINT once, after the given batch of the given epoch."""

    name = "press_ctrl_c"

    def __init__(self, epoch: int, batch: int) -> None:
        self.at, self.pressed = (epoch, batch), False

    def on_batch_end(self, state: TrainState) -> None:
        if (state.position.epoch, state.position.batch) == self.at and not self.pressed:
            self.pressed = True
            os.kill(os.getpid(), signal.SIGINT)


class KilledBeforeCheckpoint(Callback):
    """Die after MLflow logged the epoch (order 85) and before `last` is saved (90): the epoch runs again."""

    name = "killed"
    order = 88

    def on_epoch_end(self, state: TrainState) -> None:
        if state.position.epochs_done == 2:
            raise SystemExit("killed")


@pytest.mark.parametrize(
    ("stop", "expected"),
    [(lambda: PressCtrlC(1, 1), TrainingInterrupted), (KilledBeforeCheckpoint, SystemExit)],
    ids=["ctrl-c mid-epoch", "killed between the MLflow row and the checkpoint"],
)
def test_a_resumed_run_continues_the_same_mlflow_run(tmp_path: Path, stop: Any, expected: type[BaseException]) -> None:
    spec = _mlflow_spec(tmp_path)
    uninterrupted = train(spec, tmp_path / "whole", quiet=True)
    with pytest.raises(expected):
        train(spec, tmp_path / "run", quiet=True, callbacks=[stop()])
    client, runs = _mlflow_runs(tmp_path)
    first = {r.info.run_id for r in runs}
    spec, checkpoint = resume_run(tmp_path / "run", None)
    train(spec, tmp_path / "run", quiet=True, resume=checkpoint)
    client, runs = _mlflow_runs(tmp_path)
    assert {r.info.run_id for r in runs} == first  # no new MLflow run
    resumed = next(r for r in runs if r.data.tags["imgcls.run_dir"] == str((tmp_path / "run").resolve()))
    assert resumed.info.status == "FINISHED"
    rows = _rows(tmp_path / "run")
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in _rows(uninterrupted)
    ]
    for key in ("train_loss", "valid_loss", "accuracy"):
        assert _history(client, resumed.info.run_id, key) == [(i + 1, float(r[key])) for i, r in enumerate(rows)]


def test_wandb_offline_run_history_has_the_epoch_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    raw = tiny_spec(DATA)
    raw["callbacks"] = [{"name": "wandb", "mode": "offline", "dir": str(tmp_path / "wb"), "project": "t"}]
    run_dir = train(spec_from_dict(raw), tmp_path / "run", quiet=True)
    [log] = (tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb")
    # wandb's own reader of the offline log: one JSON record per line.
    listing = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    records = [json.loads(line) for line in listing.splitlines() if line.startswith("{")]
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    rows = _rows(run_dir)
    assert [h["_step"] for h in history] == [1, 2]
    for item, row in zip(history, rows, strict=True):
        assert item["train_loss"] == float(row["train_loss"]) and item["valid_loss"] == float(row["valid_loss"])
        assert item["accuracy"] == float(row["accuracy"])
    [config] = [r["run"]["config"]["update"] for r in records if r["type"] == "run"]
    assert config["train"]["stages"][0]["lr_max"] == 0.003
