"""The book's recipes in configs/, each run for a few steps on a generated stand-in with the same layout."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from imgcls.data.demo import render
from imgcls.models.factory import create_model
from imgcls.spec import load_spec
from imgcls.spec.train import ModelSpec
from imgcls.train.run import train

CONFIGS = Path(__file__).parents[1] / "configs"
SHAPES = {"Abyssinian": "circle", "great_pyrenees": "square", "newfoundland": "triangle"}
SYNSETS = {"n01440764": "circle", "n02102040": "cross", "n02979186": "ring"}


def _save(path: Path, shape: str, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    render(np.random.default_rng(seed), [shape])[0].save(path, quality=85)


@pytest.fixture(scope="module")
def pets_standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """oxford-iiit-pet/images/<breed>_<n>.jpg, with the annotations folder fastai's archive also has."""
    root = tmp_path_factory.mktemp("oxford-iiit-pet")
    for index, (breed, shape) in enumerate(SHAPES.items()):
        for number in range(10):
            _save(root / "images" / f"{breed}_{number + 1}.jpg", shape, index * 100 + number)
    (root / "annotations").mkdir()
    (root / "annotations" / "list.txt").write_text("not an image\n")
    return root


@pytest.fixture(scope="module")
def imagenette_standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """imagenette2/{train,val}/<synset>/<n>.JPEG."""
    root = tmp_path_factory.mktemp("imagenette2")
    for index, (synset, shape) in enumerate(SYNSETS.items()):
        for number in range(10):
            split = "val" if number % 4 == 0 else "train"
            _save(root / split / synset / f"{synset}_{number}.JPEG", shape, index * 100 + number)
    return root


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_pets_recipe(pets_standin: Path, tmp_path: Path) -> None:
    weights = tmp_path / "pretrained.pth"
    torch.save(create_model(ModelSpec(arch="xresnet_tiny"), 2).body.state_dict(), weights)
    spec = load_spec(
        CONFIGS / "pets.yaml",
        [
            f"data.path={pets_standin}",
            "data.item_tfm.size=48",
            "augment.size=32",
            "data.bs=4",
            "data.num_workers=0",
            "model.arch=xresnet_tiny",
            "model.pretrained=false",
            f"model.weights={weights}",
            "train.stages.0.epochs=1",
        ],
    )
    assert spec.data.labels.kind == "regex" and spec.train.stages[0].schedule == "fine_tune"
    run = train(spec, tmp_path / "pets", quiet=True)
    rows = _metrics(run)
    assert [r["phase"] for r in rows] == ["frozen", "unfrozen"]
    assert set(rows[0]) >= {"error_rate"}


def test_imagenette_recipe_progressive_resizing(imagenette_standin: Path, tmp_path: Path) -> None:
    overrides = [
        f"data.path={imagenette_standin}",
        "data.item_tfm.size=48",
        "data.num_workers=0",
        "model.arch=xresnet_tiny",
    ]
    for stage, size in enumerate([24, 32, 32]):
        overrides += [
            f"train.stages.{stage}.size={size}",
            f"train.stages.{stage}.bs=4",
            f"train.stages.{stage}.epochs=1",
        ]
    spec = load_spec(CONFIGS / "imagenette.yaml", overrides)
    assert [c.name for c in spec.callbacks] == ["mixup", "save_best"]
    assert spec.train.loss.name == "label_smoothing_cross_entropy" and spec.data.normalize == "imagenet"
    run = train(spec, tmp_path / "imagenette", quiet=True)
    rows = _metrics(run)
    assert [r["stage"] for r in rows] == ["0", "1", "2"]
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)


@pytest.mark.parametrize("name", ["demo", "pets_discriminative", "imagenette_baseline"])
def test_other_recipes_load(name: str) -> None:
    spec = load_spec(CONFIGS / f"{name}.yaml")
    assert spec.train.stages
