"""The builder's class-imbalance rules: loss weights from the training counts (recorded and written to the run
folder, so evaluation computes the same valid_loss) and the balanced sampler."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_spec

from imgcls.data.loaders import BalancedBatchSampler, EpochBatchSampler
from imgcls.errors import SpecError, TrainingInterrupted
from imgcls.evaluate.load import load_run
from imgcls.spec.load import spec_from_dict
from imgcls.spec.train import LossSpec
from imgcls.train.builder import Pipeline
from imgcls.train.checkpoint import read_checkpoint
from imgcls.train.evaluation import compute_metrics, evaluate
from imgcls.train.folders import resume_run
from imgcls.train.loop import InterruptFlag
from imgcls.train.losses import build_loss
from imgcls.train.run import train
from imgcls.train.runtime import resolve_runtime

COUNTS = {"a": 40, "b": 40, "c": 4}  # per split: the minority class at 10% of the others


@pytest.fixture
def imbalanced(image_folder: Callable[..., Path]) -> Path:
    return image_folder(COUNTS)


def _spec(root: Path, **overrides: Any) -> Any:
    raw = tiny_spec(str(root), data__bs=4, **overrides)
    raw["train"]["stages"][0]["epochs"] = 2
    raw["model"]["head"] = {"lin_ftrs": [16], "ps": 0.5}
    return spec_from_dict(raw)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def test_auto_class_weights_are_written_recorded_and_used_to_evaluate(imbalanced: Path, tmp_path: Path) -> None:
    spec = _spec(imbalanced, train__loss={"class_weights": "auto"}, train__stages=[{"schedule": "fit", "epochs": 1}])
    run = train(spec, tmp_path / "weighted", quiet=True)
    expected = [84 / (3 * 40), 84 / (3 * 40), 84 / (3 * 4)]  # N / (C * n_c)
    written = json.loads((run / "class_weights.json").read_text())
    assert written["option"] == "class_weights" and written["train_counts"] == COUNTS
    assert written["rule"].startswith("auto: N / (C * n_c)")
    assert list(written["weights"]) == ["a", "b", "c"] and list(written["weights"].values()) == pytest.approx(expected)
    last = read_checkpoint(run / "checkpoints" / "last.safetensors")
    assert last.record.loss_weights == pytest.approx(expected)
    # Evaluating the run rebuilds the weighted loss from the record: the same valid_loss as metrics.csv.
    loaded = load_run(run, "last")
    assert loaded.pipeline.loss.weights == pytest.approx(expected)
    predictions = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime)
    scores = compute_metrics(predictions, loaded.pipeline.loss, loaded.pipeline.metrics)
    assert scores["valid_loss"] == pytest.approx(float(_rows(run)[-1]["valid_loss"]), abs=1e-6)
    plain = build_loss(LossSpec(), loaded.pipeline.target)
    assert float(plain.per_item(predictions.outputs, predictions.targets).mean()) != pytest.approx(scores["valid_loss"])


def test_listed_class_weights_must_match_the_vocab(imbalanced: Path) -> None:
    spec = _spec(imbalanced, train__loss={"class_weights": [1.0, 2.0]})
    pipeline = Pipeline(spec, resolve_runtime(spec.runtime))
    with pytest.raises(SpecError, match=r"class_weights has 2 weight\(s\), but the model has 3 outputs \(a, b, c\)"):
        _ = pipeline.loss
    listed = _spec(imbalanced, train__loss={"name": "focal", "class_weights": [1.0, 2.0, 3.0]})
    assert Pipeline(listed, resolve_runtime(listed.runtime)).loss.weights == (1.0, 2.0, 3.0)


def test_auto_pos_weight_for_multi_label() -> None:
    spec = spec_from_dict(
        tiny_spec(
            "demo:multilabel@0.05",
            data__blocks=["image", "multi_category"],
            data__items={"kind": "csv", "csv": "labels.csv", "path_col": "fname", "prefix": "images/"},
            data__labels={"kind": "column", "column": "labels", "delimiter": " "},
            data__split={"kind": "column", "column": "is_valid"},
            train__loss={"pos_weight": "auto"},
            train__metrics=["accuracy_multi"],
        )
    )
    pipeline = Pipeline(spec, resolve_runtime(spec.runtime))
    values = pipeline.data.targets.values[pipeline.data.split.train]
    positives = values.sum(axis=0)
    assert pipeline.loss.weights == pytest.approx((len(values) - positives) / positives)
    assert pipeline.loss.name == "bce_with_logits"


def test_balanced_sampler_draws_the_minority_class_as_often_as_the_others(imbalanced: Path) -> None:
    spec = _spec(imbalanced, data__sampler="balanced")
    pipeline = Pipeline(spec, resolve_runtime(spec.runtime))
    train_batches = pipeline.stage_loaders(0).train
    assert isinstance(train_batches.sampler, BalancedBatchSampler)  # type: ignore[attr-defined]
    assert type(pipeline.stage_loaders(0).valid.sampler) is EpochBatchSampler  # type: ignore[attr-defined]
    train_batches.set_epoch(0)
    labels = torch.cat([batch.targets for batch in train_batches]).numpy()
    counts = np.bincount(labels, minlength=3)
    # 84 draws at p = 1/3: 28 each, sd sqrt(84 * 1/3 * 2/3) = 4.3; within 4 sd (a permutation would give c 4)
    assert len(labels) == 84 and (np.abs(counts - 28) < 4 * 4.3).all(), counts


def test_a_balanced_weighted_run_resumes_mid_epoch_exactly(
    imbalanced: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(imbalanced, data__sampler="balanced", train__loss={"name": "focal", "class_weights": "auto"})
    finished = train(spec, tmp_path / "finished", quiet=True)
    original = InterruptFlag.check

    def press_once(self: InterruptFlag, state: Any) -> None:
        if (state.position.epoch, state.position.batch) == (1, 5) and not getattr(self, "pressed", False):
            self.pressed = True  # type: ignore[attr-defined]
            self.requested = True
        original(self, state)

    monkeypatch.setattr(InterruptFlag, "check", press_once)
    with pytest.raises(TrainingInterrupted):
        train(spec, tmp_path / "run", quiet=True)
    monkeypatch.setattr(InterruptFlag, "check", original)
    resumed_spec, checkpoint = resume_run(tmp_path / "run", None)
    train(resumed_spec, tmp_path / "run", quiet=True, resume=checkpoint)
    assert _rows(tmp_path / "run") == _rows(finished)
