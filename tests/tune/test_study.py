"""Trials of a tiny spec in real Optuna studies: pruned, diverged, shared by two processes."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import tiny_spec

from imgcls.data.demo import ensure_demo
from imgcls.tune.sampler import TrialSeededTPE
from imgcls.tune.space import load_tune
from imgcls.tune.study import JOURNAL, Objective, epoch_rows, open_storage, run_study, trained, trial_value

DATA = "demo:folder@0.02"


def _config(tmp_path: Path, epochs: int, **tune: Any) -> Path:
    raw = tiny_spec(DATA)
    raw["train"]["stages"][0]["epochs"] = epochs
    raw["tune"] = {"space": {"train.stages.0.lr_max": {"log_uniform": [1.0e-4, 1.0e-2]}}, "n_trials": 2, **tune}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _objective(tmp_path: Path, config: Path) -> Objective:
    spec, tune, space = load_tune(config)
    return Objective(spec, tune, space, tmp_path / "study")


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_pruned_trial_stops_cleanly_after_its_epoch(tmp_path: Path) -> None:
    objective = _objective(tmp_path, _config(tmp_path, epochs=3, n_trials=1))
    # Optuna's threshold pruner with upper 0: any valid_loss (> 0) prunes at the first report.
    study = optuna.create_study(sampler=TrialSeededTPE(0), pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    run_study(study, objective)
    [trial] = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["note"].startswith("pruned after epoch row 1: valid_loss")
    run_dir = Path(trial.user_attrs["run_dir"])
    rows = _rows(run_dir)
    assert len(rows) == 1 and trial.intermediate_values == {1: float(rows[0]["valid_loss"])}
    assert (run_dir / "checkpoints" / "last.safetensors").is_file()  # the epoch it stopped at is saved


def test_a_trial_is_never_pruned_after_its_last_epoch(tmp_path: Path) -> None:
    objective = _objective(tmp_path, _config(tmp_path, epochs=1, n_trials=1))
    study = optuna.create_study(sampler=TrialSeededTPE(0), pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    run_study(study, objective)
    [trial] = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.intermediate_values == {1: trial.value}


def test_a_diverging_trial_fails_and_the_study_goes_on(tmp_path: Path) -> None:
    config = _config(tmp_path, epochs=1, space={"train.stages.0.lr_max": {"choice": [1.0e4, 3.0e-3]}})
    objective = _objective(tmp_path, config)
    study = optuna.create_study(sampler=TrialSeededTPE(0))
    study.enqueue_trial({"train.stages.0.lr_max": 1.0e4})  # the diverging one first
    study.enqueue_trial({"train.stages.0.lr_max": 3.0e-3})
    run_study(study, objective)
    diverged, fine = study.trials
    assert diverged.state == optuna.trial.TrialState.FAIL
    assert "valid_loss became nan" in diverged.user_attrs["note"]
    assert fine.state == optuna.trial.TrialState.COMPLETE
    rows = _rows(Path(fine.user_attrs["run_dir"]))
    assert fine.value == float(rows[-1]["valid_loss"])


def test_an_rdb_url_opens_an_rdb_storage_with_heartbeats(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db", tmp_path / "study")
    assert isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval() == 60
    journal = open_storage(None, tmp_path / "study")
    assert isinstance(journal, optuna.storages.JournalStorage) and (tmp_path / "study" / JOURNAL).is_file()


def test_epoch_rows_counts_every_phase() -> None:
    from imgcls.spec.load import spec_from_dict

    raw = tiny_spec(DATA)
    raw["train"]["stages"] = [{"schedule": "fine_tune", "epochs": 3, "freeze_epochs": 2}, {"schedule": "fit"}]
    assert epoch_rows(spec_from_dict(raw)) == 2 + 3 + 1


def test_trial_value_is_the_last_or_the_best_epoch(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("epoch,valid_loss,accuracy\n0,0.5,0.7\n1,0.25,0.9\n2,0.375,0.8\n")
    assert trial_value(tmp_path, "valid_loss", "last", minimize=True) == 0.375
    assert trial_value(tmp_path, "valid_loss", "best", minimize=True) == 0.25
    assert trial_value(tmp_path, "accuracy", "best", minimize=False) == 0.9


@pytest.mark.slow
def test_two_processes_on_one_journal_run_n_trials_in_total(tmp_path: Path) -> None:
    ensure_demo("folder", scale=0.02)  # generated once here, not by both processes at the same moment
    config = _config(tmp_path, epochs=1, n_trials=4)
    command = [sys.executable, "-m", "imgcls", "tune", str(config), "--out", "study", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    study = optuna.load_study(study_name="tiny", storage=open_storage(None, tmp_path / "study"))
    assert (tmp_path / "study" / JOURNAL).is_file()
    ran = trained(study)
    assert sorted(t.number for t in ran) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in ran)
    assert len({t.params["train.stages.0.lr_max"] for t in ran}) == 4  # no trial proposed twice
    assert sorted(p.name for p in (tmp_path / "study").glob("trial-*")) == [f"trial-{n:04d}" for n in range(4)]
    assert all(f"trial {n}:" in "".join(outputs) for n in range(4))
    assert sum(output.count("trial 0:") for output in outputs) == 1  # each trial trained by one process only


def test_a_trial_left_running_by_a_dead_process_is_marked_failed(tmp_path: Path) -> None:
    # A journal storage has no heartbeat: a trainer killed with SIGKILL leaves its trial RUNNING. The next
    # process on the same machine marks it failed; a live process's trial and another machine's stay running.
    from optuna.trial import TrialState

    from imgcls.tune.study import fail_orphaned_trials, process_tag

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_tag = f"{gone.pid}:{(process_tag(gone.pid) or ':1').split(':')[1]}"
    gone.wait()  # reaped: /proc no longer has it
    assert process_tag(gone.pid) is None
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        storage = open_storage(None, tmp_path / "study")
        study = optuna.create_study(storage=storage, study_name="tiny")
        tags = {"dead": gone_tag, "alive": process_tag(sleeper.pid), "elsewhere": gone_tag}
        for name, tag in tags.items():
            trial = study.ask()
            trial.set_user_attr("host", socket.gethostname() if name != "elsewhere" else "another-machine")
            trial.set_user_attr("process", tag)
        reopened = optuna.load_study(study_name="tiny", storage=open_storage(None, tmp_path / "study"))
        assert fail_orphaned_trials(reopened) == [0]
        states = [t.state for t in optuna.load_study(study_name="tiny", storage=storage).trials]
        assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
        assert fail_orphaned_trials(reopened) == []  # nothing left to fail
    finally:
        sleeper.kill()
        sleeper.wait()
