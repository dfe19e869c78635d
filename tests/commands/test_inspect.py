"""summary and show-batch show what training's first stage (or --stage N) sees: its size, the one normalizer of
the builder, the model's channels, and items drawn at random."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_spec
from PIL import Image
from trained_runs import run_cli

from imgcls.augment.pipeline import IMAGENET
from imgcls.commands.show_batch import batch_view
from imgcls.data.datablock import build_data
from imgcls.report.console import Console
from imgcls.spec.load import spec_from_dict
from imgcls.train.builder import Pipeline, normalizer_plan
from imgcls.train.runtime import resolve_runtime


def _staged(**overrides: Any) -> dict[str, Any]:
    """Progressive resizing as configs/imagenette.yaml does it: items at 48 px, stage 1 at 24, stage 2 at 40."""
    raw = tiny_spec("demo:folder@0.05", **overrides)
    raw["data"]["item_tfm"] = {"kind": "resize", "size": 48}
    raw["augment"] = {"size": 40}
    raw["train"]["stages"] = [
        {"schedule": "fit_one_cycle", "epochs": 1, "size": 24, "bs": 4},
        {"schedule": "fit_one_cycle", "epochs": 1},
    ]
    return raw


def test_summary_and_show_batch_use_the_first_stage_size(
    write_spec: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_spec(_staged())
    assert run_cli("summary", str(config)) == 0
    printed = capsys.readouterr().out
    assert "resample to (24, 24)" in printed and "batch size 4" in printed
    assert run_cli("summary", str(config), "--stage", "2") == 0
    printed = capsys.readouterr().out
    assert "resample to (40, 40)" in printed and "batch size 8" in printed
    spec = spec_from_dict(_staged())
    data = build_data(spec.data)
    assert batch_view(spec, data, Console(quiet=True), n=2).images[0].shape == (24, 24, 3)
    assert batch_view(spec, data, Console(quiet=True), n=2, stage=2).images[0].shape == (40, 40, 3)
    assert run_cli("summary", str(config), "--stage", "3") == 2  # a stage the spec does not have


def test_one_normalizer_for_training_summary_and_show_batch(
    write_spec: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """vit_tiny's pretrained statistics are (0.5, 0.5, 0.5); `normalize: imagenet` means ImageNet's, everywhere."""
    from safetensors.torch import save_file

    from imgcls.models.factory import create_body

    raw = tiny_spec("demo:folder@0.02")
    raw["model"] = {"arch": "vit_tiny_patch16_224", "kwargs": {"img_size": 32}}
    body = create_body(spec_from_dict(raw).model)  # built from scratch: nothing is downloaded
    weights = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(weights))
    raw["model"]["weights"] = str(weights)
    for choice, expected in (("imagenet", IMAGENET.mean), ("auto", (0.5, 0.5, 0.5))):
        raw["data"]["normalize"] = choice
        spec = spec_from_dict(raw)
        training = Pipeline(spec, resolve_runtime(spec.runtime)).normalizer
        assert training is not None and training.mean == pytest.approx(expected)
        assert normalizer_plan(spec).stats == training  # what show-batch applies and undoes
        assert run_cli("summary", str(write_spec(raw))) == 0
        assert f"mean {[round(v, 4) for v in expected]}" in capsys.readouterr().out


def test_show_batch_of_a_grey_model_is_grey(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    raw = tiny_spec("demo:folder@0.02")
    raw["model"]["n_in"] = 1
    spec = spec_from_dict(raw)
    view = batch_view(spec, build_data(spec.data), Console(quiet=True), n=4)
    assert all(image.ndim == 2 for image in view.images)  # one channel, drawn with the grey colormap
    out = tmp_path / "grey.png"
    assert run_cli("show-batch", str(write_spec(raw)), "--out", str(out), "--n", "4") == 0
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
    colour = tmp_path / "colour.png"
    assert run_cli("show-batch", str(write_spec(tiny_spec("demo:folder@0.02"))), "--out", str(colour)) == 0
    rgb = np.asarray(Image.open(colour).convert("RGB")).astype(int)
    assert not np.array_equal(rgb[..., 0], rgb[..., 1])  # the same figure of an RGB model has colour


def test_items_are_drawn_at_random_not_the_first_sorted_ones(tmp_path: Path) -> None:
    raw = tiny_spec("demo:folder@0.05")
    spec = spec_from_dict(raw)
    data = build_data(spec.data)
    first = batch_view(spec, data, Console(quiet=True), n=6, valid=True, seed=0).titles
    in_order = [data.target.label_text(data.targets.values[i]) for i in data.split.valid[:6]]
    assert in_order == ["circle"] * 3 + ["cross"] * 3  # what the first six sorted items would show
    assert first != in_order and len(set(first)) >= 3
    again = batch_view(spec, data, Console(quiet=True), n=6, valid=True, seed=0).titles
    other = batch_view(spec, data, Console(quiet=True), n=6, valid=True, seed=1).titles
    assert first == again and first != other
