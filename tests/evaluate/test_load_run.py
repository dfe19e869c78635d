"""Loading a run: a folder that is not one says so, and what a run folder holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_image
from trained_runs import copy_run, run_cli, trained_run


@pytest.mark.parametrize("command", ["tta-eval", "interpret", "show-results", "predict"])
def test_a_folder_of_images_is_not_a_run(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "photos"
    write_image(photos / "a.jpg", (20, 20))
    args = [str(photos), str(photos), "--out", str(tmp_path / "p.csv")] if command == "predict" else [str(photos)]
    assert run_cli(command, *args) in (1, 4)
    err = capsys.readouterr().err
    assert f"{photos} is " in err and "run folder" in err
    assert "spec.yaml, metrics.csv and checkpoints/best.safetensors" in err  # what a run folder holds


def test_a_missing_folder_and_a_run_without_its_best_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("interpret", str(tmp_path / "runs" / "nope")) == 4
    assert "run folder not found" in capsys.readouterr().err
    run = copy_run(trained_run("category", tmp_path_factory), tmp_path)
    (run / "checkpoints" / "best.safetensors").unlink()
    assert run_cli("tta-eval", str(run), "-n", "1") == 4
    err = capsys.readouterr().err
    assert "has no best checkpoint (checkpoints/best.safetensors)" in err and "--checkpoint last" in err
    assert run_cli("tta-eval", str(run), "-n", "1", "--checkpoint", "last", "--quiet") == 0
