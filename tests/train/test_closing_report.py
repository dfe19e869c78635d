"""The closing lines of `imgcls train` for every target kind: the best checkpoint with its metrics, what was
written, and the kind's verdict, checked against the run's own files and a recomputation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from trained_runs import copy_run, trained_run

from imgcls.evaluate.load import load_run
from imgcls.report.console import Console
from imgcls.train.evaluation import evaluate
from imgcls.train.run import closing_report

COMMON = "spec.yaml, env.json, split.json, normalize.json, metrics.csv, metrics.png, checkpoints/"


def _report(
    kind: str, factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, list[str]]:
    run = copy_run(trained_run(kind, factory), tmp_path)
    capsys.readouterr()
    closing_report(run, Console(quiet=True))
    return run, capsys.readouterr().out.splitlines()


def _best_line(run: Path, lines: list[str]) -> str:
    metrics = load_run(run).checkpoint.record.metrics
    frame = pd.read_csv(run / "metrics.csv")
    row = int(frame["valid_loss"].idxmin())
    assert lines[0].startswith(
        f"best checkpoint: stage 1/1, phase 1/1 fit_one_cycle, epoch {frame.loc[row, 'epoch']}/2 "
        f"(row {row + 1} of metrics.csv): "
    )
    assert f"valid_loss {metrics['valid_loss']:.4f}" in lines[0]
    return lines[0]


def test_classification_names_the_most_confused_pairs(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, lines = _report("category", tmp_path_factory, tmp_path, capsys)
    best = _best_line(run, lines)
    metrics = load_run(run).checkpoint.record.metrics
    assert f"accuracy {metrics['accuracy']:.4f}" in best
    right = round(metrics["accuracy"] * 10)
    assert lines[1] == f"accuracy {metrics['accuracy']:.4f} ({right} of 10 right)"
    pairs = pd.read_csv(run / "most_confused.csv")
    shown = "; ".join(f"{a} -> {p} ({n})" for a, p, n in pairs.head(5).itertuples(index=False))
    assert lines[2] == (f"most confused (actual -> predicted): {shown}" if len(pairs) else "no class confused")
    assert lines[3] == (
        f"wrote {run}/: {COMMON}, confusion_matrix.csv/.png, confusion_matrix_normalized.png, most_confused.csv"
    )


def test_multilabel_gives_the_threshold_baselines_and_the_best_threshold(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, lines = _report("multi_category", tmp_path_factory, tmp_path, capsys)
    _best_line(run, lines)
    loaded = load_run(run)
    result = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    positive = float(result.targets.numpy().mean())
    recorded = loaded.checkpoint.record.metrics["accuracy_multi"]
    assert lines[1] == (
        f"accuracy_multi {recorded:.4f} at the run's threshold 0.40 "
        f"(all-negative {1 - positive:.4f}, all-positive {positive:.4f})"
    )
    assert re.fullmatch(
        r"best threshold 0\.\d{3}: accuracy_multi 0\.\d{4} \(\+0\.\d{4}\); .*--save-thresholds.*", lines[2]
    ) or (lines[2] == "no threshold of the sweep does better than the run's 0.40")
    assert lines[3] == f"wrote {run}/: {COMMON}"


def test_points_give_the_mean_error_in_original_pixels(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, lines = _report("point", tmp_path_factory, tmp_path, capsys)
    best = _best_line(run, lines)
    metrics = load_run(run).checkpoint.record.metrics
    assert f"error_px {metrics['error_px']:.4f}" in best  # the table's point error, in pixels of the input
    found = re.fullmatch(
        r"mean point error ([\d.]+) px in the original images \(median [\d.]+, max [\d.]+\); "
        r"([\d.]+) px at the model input 32x32",
        lines[1],
    )
    assert found is not None and float(found.group(2)) == pytest.approx(metrics["error_px"], abs=0.006)
    out = tmp_path / "interpret"
    from trained_runs import run_cli

    assert run_cli("interpret", str(run), "--out", str(out), "--quiet") == 0
    errors = pd.read_csv(out / "point_errors.csv")
    assert float(found.group(1)) == pytest.approx(errors["error_px"].mean(), abs=0.006)
    assert lines[2] == f"wrote {run}/: {COMMON}"


def test_regression_gives_the_errors_and_the_mean_baseline(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, lines = _report("regression", tmp_path_factory, tmp_path, capsys)
    _best_line(run, lines)
    loaded = load_run(run)
    metrics = loaded.checkpoint.record.metrics
    assert re.fullmatch(rf"value_1: MAE {metrics['mae']:.4g}, RMSE {metrics['rmse']:.4g}, R² -?[\d.]+", lines[1])
    actual = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime).targets.numpy().reshape(-1)
    baseline = np.abs(actual - actual.mean()).mean()
    assert lines[2] == f"baseline: predicting the validation mean gives MAE {baseline:.4g}"
    assert lines[3] == f"wrote {run}/: {COMMON}"
