"""torchrun with 2 CPU processes (gloo): one run folder, metrics over every item once, exact resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from imgcls.evaluate.load import load_run
from imgcls.train.checkpoint import read_checkpoint
from imgcls.train.evaluation import compute_metrics, evaluate

SPEC = {
    "name": "ddp",
    "seed": 3,
    "data": {
        "path": "demo:folder@0.1",
        "split": {"kind": "grandparent"},
        "item_tfm": {"kind": "resize", "size": 40},
        "bs": 8,
        "num_workers": 0,
    },
    "augment": {"size": 32},
    "model": {"arch": "xresnet_tiny", "head": {"lin_ftrs": [16], "ps": 0.25}},
    "train": {"stages": [{"schedule": "fit_one_cycle", "epochs": 6, "lr_max": 5e-3}], "metrics": ["accuracy"]},
    # The EMA on every rank: its columns and its average must resume exactly and match one process too.
    "callbacks": [{"name": "ema", "decay": 0.9, "warmup": True, "validate": "both"}],
    "runtime": {"log_every": 2},
}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "imgcls", *args]


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "ddp.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


@pytest.fixture(scope="module")
def ddp_run(spec_file: Path) -> Path:
    run = spec_file.parent / "run"
    # --gpus N is the convenience that starts torchrun; on a CPU-only machine the processes use gloo.
    done = subprocess.run(
        [sys.executable, "-m", "imgcls", "train", str(spec_file), "--out", str(run), "--quiet", "--gpus", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run


def test_the_run_folder_is_written_once(ddp_run: Path) -> None:
    rows = _rows(ddp_run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 7))  # one row per epoch (from 1), not per rank
    assert '"world_size": 2' in (ddp_run / "env.json").read_text()
    assert {p.name for p in (ddp_run / "checkpoints").iterdir()} == {"last.safetensors", "best.safetensors"}


def test_training_loss_decreases(ddp_run: Path) -> None:
    rows = _rows(ddp_run)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_validation_metrics_equal_a_single_process_on_the_same_weights(ddp_run: Path) -> None:
    loaded = load_run(ddp_run, "last")
    predictions = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    assert len(predictions) == 30 and predictions.indices.unique().numel() == 30  # every item once
    single = compute_metrics(predictions, loaded.pipeline.loss, loaded.pipeline.metrics)
    last = _rows(ddp_run)[-1]
    assert single["valid_loss"] == pytest.approx(float(last["valid_loss"]), abs=1e-5)
    assert single["accuracy"] == pytest.approx(float(last["accuracy"]), abs=1e-9)
    # The average that rank 0 saved, evaluated in one process, gives the ema_ columns the ranks computed.
    average = {k.removeprefix("ema."): v for k, v in loaded.checkpoint.callback_tensors.items()}
    ema_model = loaded.pipeline.trained_model(average, "ema")
    ema_predictions = evaluate(ema_model, loaded.pipeline.batches("valid"), loaded.runtime)
    ema = compute_metrics(ema_predictions, loaded.pipeline.loss, loaded.pipeline.metrics)
    assert ema["valid_loss"] == pytest.approx(float(last["ema_valid_loss"]), abs=1e-5)
    assert ema["accuracy"] == pytest.approx(float(last["ema_accuracy"]), abs=1e-9)
    assert ema["valid_loss"] != pytest.approx(single["valid_loss"], abs=1e-4)


def test_a_killed_ddp_run_resumes_to_the_same_metrics(ddp_run: Path, spec_file: Path) -> None:
    run = spec_file.parent / "killed"
    first = run / "checkpoints" / "last.safetensors"
    process = subprocess.Popen(
        _torchrun("train", str(spec_file), "--out", str(run), "--quiet"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # no chance to save anything: the last checkpoint must do
    process.wait()
    done = read_checkpoint(first).record.position.epochs_done
    assert 1 <= done < 6, "the run was not killed in the middle"
    resumed = subprocess.run(
        _torchrun("train", "--resume", str(run), "--quiet"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert _rows(run) == _rows(ddp_run)


def test_an_error_on_a_rank_ends_the_job_with_its_message(spec_file: Path, write_spec: Callable[..., Path]) -> None:
    bad = yaml.safe_load(spec_file.read_text())
    bad["data"]["bs"] = 64  # larger than each rank's share of the 40 training items
    path = write_spec(bad)
    done = subprocess.run(
        _torchrun("train", str(path), "--out", str(path.parent / "bad")),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0
    assert "error (rank 0): the batch size 64 x 2 process(es) is larger than the training set" in done.stderr
