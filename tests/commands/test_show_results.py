"""show-results: random validation items of a run, the prediction next to the truth, for every target kind."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from trained_runs import run_cli, trained_run

from imgcls.commands.summary import sample_positions
from imgcls.evaluate.load import load_run
from imgcls.train.evaluation import evaluate


def _shown(printed: str) -> list[tuple[str, str]]:
    """(item, text) of each listed prediction."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^  (\S+): (.+)$", printed, flags=re.MULTILINE)]


def test_classification_titles_say_right_or_wrong(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = trained_run("category", tmp_path_factory)
    out = tmp_path / "shown.png"
    assert run_cli("show-results", str(run), "--out", str(out), "--n", "6", "--seed", "3", "--quiet") == 0
    printed = capsys.readouterr().out
    assert Image.open(out).size[0] > 300
    loaded = load_run(run)
    result = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    names = [loaded.pipeline.data.items.relative(int(i)) for i in result.indices]
    vocab = loaded.target.vocab
    probs = torch.softmax(result.outputs, dim=-1)
    positions = sample_positions(len(names), 6, 3)
    right = 0
    for (item, text), position in zip(_shown(printed), positions, strict=True):
        predicted, actual = int(probs[position].argmax()), int(result.targets[position])
        right += predicted == actual
        assert item == names[position]
        assert text.startswith(f"actual {vocab[actual]}, predicted {vocab[predicted]} ({probs[position].max():.2f})")
        assert text.endswith("right" if predicted == actual else "WRONG")
    assert f"show-results: 6 of 10 validation items at random (--seed 3), best.safetensors: {right} of 6 right" in (
        printed
    )
    # drawn at random, not the first sorted items; the same seed draws the same ones
    assert [item for item, _ in _shown(printed)] != names[:6]
    assert run_cli("show-results", str(run), "--out", str(out), "--n", "6", "--seed", "3", "--quiet") == 0
    assert _shown(capsys.readouterr().out) == _shown(printed)


def test_multilabel_values_and_points(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    multi = trained_run("multi_category", tmp_path_factory)
    assert run_cli("show-results", str(multi), "--out", str(tmp_path / "m.png"), "--n", "3", "--quiet") == 0
    loaded = load_run(multi)
    result = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    probs = torch.sigmoid(result.outputs).numpy()
    for (_, text), position in zip(_shown(capsys.readouterr().out), sample_positions(len(probs), 3, 0), strict=True):
        actual = loaded.target.label_text(result.targets[position].numpy())
        predicted = loaded.target.label_text(probs[position] > 0.4)  # the run's threshold
        assert text == f"actual {actual}, predicted {predicted}  {'right' if actual == predicted else 'WRONG'}"
    regression = trained_run("regression", tmp_path_factory)
    assert run_cli("show-results", str(regression), "--out", str(tmp_path / "r.png"), "--n", "2", "--quiet") == 0
    loaded = load_run(regression)
    result = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    for (_, text), position in zip(_shown(capsys.readouterr().out), sample_positions(5, 2, 0), strict=True):
        actual, predicted = float(result.targets[position]), float(result.outputs[position, 0])
        assert text == f"actual {actual:.3g}, predicted {predicted:.3g}"
    points = trained_run("point", tmp_path_factory)
    assert run_cli("show-results", str(points), "--out", str(tmp_path / "p.png"), "--n", "3", "--quiet") == 0
    loaded = load_run(points)
    result = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    half = np.array([16.0, 16.0])  # the model input is 32x32
    errors = np.linalg.norm((result.outputs.numpy() - result.targets.numpy().reshape(5, 2)) * half, axis=1)
    for (_, text), position in zip(_shown(capsys.readouterr().out), sample_positions(5, 3, 0), strict=True):
        assert text == f"error {errors[position]:.1f} px (model input)"
    assert Image.open(tmp_path / "p.png").size[0] > 300
