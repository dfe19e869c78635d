"""The presize cache and the device-resident mode give the validation metrics of plain decoding, re-read
changed files, and keep random training crops."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_spec, write_image

from imgcls.data.cache import PresizeCache
from imgcls.data.datablock import build_data
from imgcls.data.item_tfms import Resize
from imgcls.models.factory import create_model
from imgcls.spec.load import spec_from_dict
from imgcls.train.builder import Pipeline
from imgcls.train.evaluation import compute_metrics, evaluate
from imgcls.train.runtime import resolve_runtime
from imgcls.train.source import resolve_mode


def _spec(tmp_path: Path, mode: str, **data: Any) -> Any:
    raw = tiny_spec("demo:folder@0.05")
    raw["data"].update(mode=mode, cache_dir=str(tmp_path / "cache"), **data)
    return spec_from_dict(raw)


@pytest.mark.parametrize("method", ["crop", "squish"])
def test_same_validation_metrics_through_every_mode(tmp_path: Path, method: str) -> None:
    torch.manual_seed(0)
    model = create_model(_spec(tmp_path, "stream").model, n_out=5)  # the same weights for every mode
    results = []
    for mode in ("stream", "cache", "cache", "resident"):  # the second cache pass reads what the first wrote
        spec = _spec(tmp_path, mode, item_tfm={"kind": "resize", "size": 40, "method": method})
        pipeline = Pipeline(spec, resolve_runtime(spec.runtime))
        assert pipeline.source.mode == mode
        loaders = pipeline.stage_loaders(0)
        predictions = evaluate(model, loaders.valid, pipeline.runtime)
        results.append((predictions, compute_metrics(predictions, pipeline.loss, pipeline.metrics)))
    for predictions, metrics in results[1:]:
        assert torch.equal(predictions.outputs, results[0][0].outputs)
        assert metrics == results[0][1]
    assert list((tmp_path / "cache").rglob("*.u8"))


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", (60, 40), (200, 0, 0))
    cache = PresizeCache(tmp_path / "cache", Resize((20, 20), "squish"), train=False)
    first = cache.entry(str(path))
    cache.write(first, np.zeros((20, 20, 3), np.uint8), (60, 40))
    assert cache.read(first, (20, 20)) is not None
    time.sleep(0.01)
    write_image(path, (60, 40), (0, 200, 0))
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    assert cache.entry(str(path)) != first  # new content, new key: never served stale
    other_transform = PresizeCache(tmp_path / "cache", Resize((24, 24), "squish"), train=False)
    assert other_transform.entry(str(path)) != cache.entry(str(path))


def test_cached_training_items_still_get_a_random_crop_each_epoch(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "cache", item_tfm={"kind": "resize", "size": 40, "method": "crop"})
    data = build_data(spec.data)
    cache = PresizeCache(tmp_path / "cache", data.item_tfm, train=True)
    assert cache.kind == "source"
    dataset = data.dataset(train=True, seed=0, cache=cache)
    long_item = next(i for i in range(len(dataset)) if abs(np.log(_aspect(dataset, i))) > 0.2)
    crops = [dataset[(long_item, epoch)][0] for epoch in range(4)]
    assert len({c.tobytes() for c in crops}) > 1
    entries = sorted((tmp_path / "cache").rglob("*.u8"))
    assert len(entries) == 1  # decoded once, cut four times
    uncached = data.dataset(train=True, seed=0)
    plain = [uncached[(long_item, epoch)][0] for epoch in range(4)]
    for cached, decoded in zip(crops, plain, strict=True):
        assert np.abs(cached.astype(int) - decoded.astype(int)).mean() < 8  # same window, resampled alike


def _aspect(dataset: Any, index: int) -> float:
    from PIL import Image

    with Image.open(dataset.paths[int(dataset.indices[index])]) as image:
        return image.size[0] / image.size[1]


def test_auto_mode_picks_resident_only_where_it_changes_nothing(tmp_path: Path) -> None:
    runtime = resolve_runtime(spec_from_dict(tiny_spec("x")).runtime)
    crop = _spec(tmp_path, "auto", item_tfm={"kind": "resize", "size": 40, "method": "crop"})
    squish = _spec(tmp_path, "auto", item_tfm={"kind": "resize", "size": 40, "method": "squish"})
    assert resolve_mode(crop, build_data(crop.data), runtime)[0] == "stream"
    mode, reason = resolve_mode(squish, build_data(squish.data), runtime)
    assert mode == "resident" and "budget" in reason


def test_training_in_resident_mode(tmp_path: Path) -> None:
    from imgcls.train.run import train

    spec = _spec(tmp_path, "resident", item_tfm={"kind": "resize", "size": 40, "method": "squish"})
    run = train(spec, tmp_path / "run", quiet=True)
    assert (run / "checkpoints" / "best.safetensors").is_file()
