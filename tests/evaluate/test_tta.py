"""TTA: fastai's blend on hand-computed numbers, the plain pass equal to the run's own metrics, and point
predictions carried back from every augmented frame to the plain one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from trained_runs import copy_run, run_cli, trained_run

from imgcls.errors import ImgclsError
from imgcls.evaluate.load import load_run
from imgcls.evaluate.tta import augmented_pass, blend, evaluate_values, tta
from imgcls.targets.category import Category
from imgcls.targets.multi_category import MultiCategory
from imgcls.targets.point import Point
from imgcls.train.evaluation import evaluate
from imgcls.train.losses import Loss


def test_blend_is_three_quarters_augmented_mean_and_one_quarter_plain() -> None:
    plain = torch.tensor([[0.2, 0.8], [0.9, 0.1]])
    augmented = [torch.tensor([[0.6, 0.4], [0.5, 0.5]]), torch.tensor([[0.4, 0.6], [0.7, 0.3]])]
    # mean(augmented) = [[0.5, 0.5], [0.6, 0.4]]; 0.75 * that + 0.25 * plain:
    expected = torch.tensor([[0.425, 0.575], [0.675, 0.325]])
    assert torch.allclose(blend(plain, augmented), expected)
    assert torch.allclose(blend(plain, augmented, beta=1.0), plain)
    assert torch.allclose(blend(plain, augmented, beta=0.0), torch.tensor([[0.5, 0.5], [0.6, 0.4]]))


def test_use_max_takes_the_largest_value_of_every_pass() -> None:
    plain = torch.tensor([[0.2, 0.8], [0.9, 0.1]])
    augmented = [torch.tensor([[0.6, 0.4], [0.5, 0.5]]), torch.tensor([[0.4, 0.6], [0.7, 0.3]])]
    assert torch.equal(blend(plain, augmented, use_max=True), torch.tensor([[0.6, 0.8], [0.9, 0.5]]))


def test_losses_of_blended_values() -> None:
    # Classification: the NLL of the blended probability of the true class.
    probs = torch.tensor([[0.425, 0.575], [0.675, 0.325]])
    cross_entropy = Loss("cross_entropy")
    logits = Category(("a", "b")).inverse_activation(probs)
    assert torch.allclose(torch.softmax(logits, dim=-1), probs)
    losses = cross_entropy.per_item(logits, torch.tensor([1, 1]))
    assert torch.allclose(losses, -torch.log(torch.tensor([0.575, 0.325])))
    # Multi-label: binary cross-entropy of the blended label probabilities.
    labels = torch.tensor([[0.9, 0.2]])
    bce = Loss("bce_with_logits")
    value = bce.per_item(MultiCategory(("a", "b")).inverse_activation(labels), torch.tensor([[1.0, 0.0]]))
    assert float(value) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2, rel=1e-5)
    # Points: the MSE of the blended coordinates (no activation).
    mse = Loss("mse")
    points = torch.tensor([[0.5, -0.5]])
    back = Point(1).inverse_activation(points)
    assert float(mse.per_item(back, torch.tensor([[[0.25, -0.25]]]))) == pytest.approx(0.0625)


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run("category", tmp_path_factory)


def test_plain_column_is_the_runs_own_evaluation_and_tta_is_the_blend(classification_run: Path) -> None:
    loaded = load_run(classification_run)
    result = tta(loaded, n=2)
    recorded = loaded.checkpoint.record.metrics
    assert result.plain["valid_loss"] == pytest.approx(recorded["valid_loss"], abs=1e-5)
    assert result.plain["accuracy"] == pytest.approx(recorded["accuracy"])
    assert result.items == 10 and len(result.passes) == 2
    pipeline = loaded.pipeline
    expected = evaluate_values(loaded.target, pipeline.loss, pipeline.metrics, result.tta_values, result.targets)
    assert result.tta == pytest.approx(expected)
    nll = -torch.log(result.tta_values[torch.arange(10), result.targets.long()]).mean()
    assert result.tta["valid_loss"] == pytest.approx(float(nll), rel=1e-5)


def test_augmented_passes_differ_from_each_other_and_from_the_plain_pass(classification_run: Path) -> None:
    loaded = load_run(classification_run)
    plain = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    first, again, second = augmented_pass(loaded, 1), augmented_pass(loaded, 1), augmented_pass(loaded, 2)
    assert torch.equal(first.outputs, again.outputs)  # seeded: the same pass twice is the same
    assert not torch.allclose(first.outputs, second.outputs)
    assert not torch.allclose(first.outputs, plain.outputs)
    assert not torch.equal(first.geometry.matrices, second.geometry.matrices)


def test_tta_passes_leave_out_the_policy_and_random_erasing(classification_run: Path) -> None:
    """Augmented passes of a run trained with augment.policy and augment.erasing see exactly the views of a run
    trained without them: the regularizers are for training batches only."""
    from imgcls.train.builder import Pipeline

    loaded = load_run(classification_run)
    extra = {"policy": {"kind": "trivial_augment"}, "erasing": {"p": 1.0, "mode": "const"}}
    augment = loaded.spec.augment.model_validate({**loaded.spec.augment.model_dump(), **extra})
    spec = loaded.spec.model_copy(update={"augment": augment})
    regularized = Pipeline(spec, loaded.runtime, loaded.checkpoint.record)

    def views(pipeline: Pipeline) -> list[torch.Tensor]:
        batches = pipeline.batches("valid", augment_train=True, random_items=True, seed_offset=1, tta=True)
        batches.set_epoch(0)
        return [batch.images for batch in batches]

    for plain, tta_batch in zip(views(loaded.pipeline), views(regularized), strict=True):
        assert torch.equal(plain, tta_batch)
    images = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    trained, _ = regularized.augment((32, 32))(images, train=True, generator=torch.Generator().manual_seed(0))
    without, _ = loaded.augment(images, train=True, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(trained, without)  # the spec does regularize its training batches


def test_tta_eval_command_prints_and_writes_both_columns(
    classification_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(classification_run, tmp_path)
    assert run_cli("tta-eval", str(run), "-n", "2", "--quiet") == 0
    printed = capsys.readouterr().out
    assert "plain" in printed and "tta" in printed and "accuracy" in printed
    frame = pd.read_csv(run / "tta.csv")
    assert list(frame["metric"]) == ["valid_loss", "accuracy"]
    summary = json.loads((run / "tta.json").read_text())
    assert summary["n_augmented"] == 2 and summary["beta"] == 0.25 and summary["checkpoint"] == "best"
    assert frame.set_index("metric")["tta"]["accuracy"] == pytest.approx(summary["tta"]["accuracy"], abs=1e-6)
    assert run_cli("tta-eval", str(run), "-n", "1", "--use-max", "--quiet") == 0
    assert json.loads((run / "tta.json").read_text())["use_max"] is True


def test_multilabel_tta_matches_the_runs_metrics(tmp_path_factory: pytest.TempPathFactory) -> None:
    loaded = load_run(trained_run("multi_category", tmp_path_factory))
    result = tta(loaded, n=1, use_max=True)
    recorded = loaded.checkpoint.record.metrics
    assert result.plain["accuracy_multi"] == pytest.approx(recorded["accuracy_multi"])
    assert result.plain["f1_macro"] == pytest.approx(recorded["f1_macro"])
    assert result.plain["valid_loss"] == pytest.approx(recorded["valid_loss"], rel=1e-4)
    assert torch.all(result.tta_values >= result.plain_values)  # max with the plain pass


@pytest.fixture(scope="module")
def point_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run("point", tmp_path_factory)


def test_augmented_point_frames_map_back_onto_the_plain_frame(point_run: Path) -> None:
    """The augmented pass's targets moved with its images; carried back they land on the plain targets. Model
    predictions are carried back by exactly this map."""
    loaded = load_run(point_run)
    plain = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    for seed in (1, 2, 3):
        moved = augmented_pass(loaded, seed)
        assert not torch.allclose(moved.targets, plain.targets, atol=1e-2)  # the augmentation did move them
        flat = moved.targets.reshape(len(moved), -1)
        back = loaded.target.to_frame(flat, moved.geometry, plain.geometry).reshape(plain.targets.shape)
        assert torch.allclose(back, plain.targets, atol=1e-4)


def test_point_tta_averages_in_the_plain_frame(point_run: Path) -> None:
    loaded = load_run(point_run)
    result = tta(loaded, n=2)
    recorded = loaded.checkpoint.record.metrics
    assert result.plain["rmse"] == pytest.approx(recorded["rmse"], rel=1e-5)
    assert result.tta["valid_loss"] == pytest.approx(
        float(((result.tta_values - result.targets.reshape(result.tta_values.shape)) ** 2).mean()), rel=1e-5
    )
    with pytest.raises(ImgclsError, match="use-max"):
        tta(loaded, n=1, use_max=True)
    # the point error in pixels of the 32x32 model input, beside rmse in [-1, 1] units: 16 px per unit
    assert set(result.tta) == {"valid_loss", "rmse", "error_px"}
    assert result.plain["error_px"] == pytest.approx(recorded["error_px"], rel=1e-5)
    distance = (result.tta_values - result.targets.reshape(result.tta_values.shape)).reshape(-1, 2) * 16
    assert result.tta["error_px"] == pytest.approx(float(distance.norm(dim=-1).mean()), rel=1e-5)


def test_regression_tta_matches_the_runs_metrics(tmp_path_factory: pytest.TempPathFactory) -> None:
    loaded = load_run(trained_run("regression", tmp_path_factory))
    result = tta(loaded, n=2)
    recorded = loaded.checkpoint.record.metrics
    assert result.plain["mae"] == pytest.approx(recorded["mae"], rel=1e-4)
    assert not torch.allclose(result.tta_values, result.plain_values)  # augmented passes moved the values
    assert result.tta["mae"] == pytest.approx(float((result.tta_values - result.targets).abs().mean()), rel=1e-5)
    assert set(result.tta) == set(result.plain) == {"valid_loss", "mae", "rmse"}
