"""`imgcls tune` end to end: trial folders, trials.csv, a best.yaml that retrains to the same number, plots,
errors with file and line, and a study that survives Ctrl-C."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import tiny_spec
from PIL import Image

from imgcls.commands.tune import run_tune
from imgcls.data.demo import ensure_demo
from imgcls.errors import SpecError
from imgcls.spec import load_spec
from imgcls.train.run import train
from imgcls.tune.study import open_storage, trained

DATA = "demo:folder@0.02"


def _config(tmp_path: Path, epochs: int = 1, n_trials: int = 3, lr: str = "lr_max") -> Path:
    raw = tiny_spec(DATA)
    raw["train"]["stages"][0]["epochs"] = epochs
    raw["tune"] = {
        "space": {f"train.stages.0.{lr}": {"log_uniform": [1.0e-4, 1.0e-2]}, "data.bs": {"choice": [4, 8]}},
        "n_trials": n_trials,
        "seed": 3,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_three_trials_and_a_best_yaml_that_retrains_to_the_same_value(tmp_path: Path) -> None:
    folder = run_tune(_config(tmp_path), None, None, tmp_path / "study", quiet=True)
    assert sorted(p.name for p in folder.glob("trial-*")) == ["trial-0000", "trial-0001", "trial-0002"]
    rows = _csv(folder / "trials.csv")
    assert [r["number"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"COMPLETE"}
    assert list(rows[0])[:5] == ["number", "state", "value", "train.stages.0.lr_max", "data.bs"]
    for row in rows:  # each trial's value is its last epoch's valid_loss
        assert float(row["value"]) == float(_csv(Path(row["run_dir"]) / "metrics.csv")[-1]["valid_loss"])
    best = min(rows, key=lambda r: float(r["value"]))
    spec = load_spec(folder / "best.yaml")
    assert spec.name == "tiny-best" and spec.tune is None
    assert spec.train.stages[0].lr_max == float(best["train.stages.0.lr_max"]) and spec.data.bs == int(best["data.bs"])
    again = train(spec, tmp_path / "retrained", quiet=True)
    assert float(_csv(again / "metrics.csv")[-1]["valid_loss"]) == float(best["value"])  # exactly, on the CPU
    for name in ("optimization_history.png", "param_importances.png"):
        assert Image.open(folder / name).size[0] > 300


def test_an_unknown_path_stops_before_any_trial(tmp_path: Path) -> None:
    config = _config(tmp_path, lr="lr_maxx")
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if "lr_maxx" in text)
    with pytest.raises(SpecError) as caught:
        run_tune(config, None, None, tmp_path / "study", quiet=True)
    assert f"{config}:{line}: train.stages.0.lr_maxx: unknown key 'lr_maxx' (did you mean 'lr_max'?)" in str(
        caught.value
    )
    assert not (tmp_path / "study").exists()


@pytest.mark.slow
def test_ctrl_c_fails_the_running_trial_and_a_rerun_continues_the_study(tmp_path: Path) -> None:
    ensure_demo("folder", scale=0.02)
    config = _config(tmp_path, epochs=8, n_trials=2)
    command = [sys.executable, "-m", "imgcls", "tune", str(config), "--out", "study", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first_epoch = tmp_path / "study" / "trial-0000" / "metrics.csv"
    deadline = time.monotonic() + 300
    while not first_epoch.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 130, output
    assert "marked failed in study 'tiny'" in output and "run the same `imgcls tune` command again" in output
    study = optuna.load_study(study_name="tiny", storage=open_storage(None, tmp_path / "study"))
    [interrupted] = study.trials
    assert interrupted.state == optuna.trial.TrialState.FAIL and "interrupted" in interrupted.user_attrs["note"]
    rerun = subprocess.run(
        command[:-1], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    study = optuna.load_study(study_name="tiny", storage=open_storage(None, tmp_path / "study"))
    states = [t.state for t in trained(study)]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]  # 2 in total, none twice
    assert [r["state"] for r in _csv(tmp_path / "study" / "trials.csv")] == ["FAIL", "COMPLETE"]


def test_tune_refuses_to_run_under_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SpecError, match="cannot run under torchrun") as caught:
        run_tune(_config(tmp_path), None, None, tmp_path / "study", quiet=True)
    assert caught.value.hint is not None and "CUDA_VISIBLE_DEVICES" in caught.value.hint
