"""The book's recipes in configs/, each run for a few steps on a generated stand-in with the same layout."""

from __future__ import annotations

import csv
import json
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
    assert [r["stage"] for r in rows] == ["1", "2", "3"]  # numbered from 1, as the console numbers them
    split = json.loads((run / "split.json").read_text())
    assert split["vocab"] == ["cassette_player", "english_springer", "tench"]  # the synsets, named
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)


@pytest.fixture(scope="module")
def pascal_standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pascal_2007/train.csv (fname, labels, is_valid) and pascal_2007/train/<fname>."""
    root = tmp_path_factory.mktemp("pascal_2007")
    classes = ["circle", "cross", "square", "triangle"]
    lines = ["fname,labels,is_valid"]
    rng = np.random.default_rng(0)
    for number in range(24):
        shapes = sorted(rng.choice(classes, size=int(rng.integers(1, 3)), replace=False).tolist())
        image, _ = render(np.random.default_rng(number), shapes)
        (root / "train").mkdir(exist_ok=True)
        image.save(root / "train" / f"{number:06d}.jpg", quality=85)
        lines.append(f"{number:06d}.jpg,{' '.join(shapes)},{number % 4 == 0}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def biwi_standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """biwi_head_pose/<person>/frame_<n>_rgb.jpg + frame_<n>_pose.txt + rgb.cal, like the real archive."""
    root = tmp_path_factory.mktemp("biwi_head_pose")
    fx, cx, cy = 500.0, 160.0, 120.0
    for person in ("01", "02", "13"):
        folder = root / person
        folder.mkdir()
        (folder / "rgb.cal").write_text(f"{fx} 0 {cx}\n0 {fx} {cy}\n0 0 1\n\n0 0 0 0\n\n1 0 0\n0 1 0\n0 0 1\n\n0 0 0\n")
        for number in range(8):
            rng = np.random.default_rng([int(person), number])
            translation = (rng.uniform(-80, 80), rng.uniform(-60, 60), rng.uniform(900, 1100))
            centre = (translation[0] * fx / translation[2] + cx, translation[1] * fx / translation[2] + cy)
            image, _ = render(rng, ["circle"], centres=[centre], size=(320, 240))
            image.save(folder / f"frame_{number:05d}_rgb.jpg", quality=85)
            rotation = "1 0 0\n0 1 0\n0 0 1\n\n"
            (folder / f"frame_{number:05d}_pose.txt").write_text(
                rotation + " ".join(f"{v:.3f}" for v in translation) + "\n"
            )
    return root


def test_pascal_multilabel_recipe(pascal_standin: Path, tmp_path: Path) -> None:
    spec = load_spec(
        CONFIGS / "pascal_multilabel.yaml",
        [
            f"data.path={pascal_standin}",
            "data.item_tfm.size=32",
            "data.bs=4",
            "data.num_workers=0",
            "model.arch=xresnet_tiny",
            "model.pretrained=false",
            "train.stages.0.epochs=1",
            "train.stages.0.freeze_epochs=1",
        ],
    )
    run = train(spec, tmp_path / "pascal", quiet=True)
    rows = _metrics(run)
    assert [r["phase"] for r in rows] == ["frozen", "unfrozen"]
    assert 0.0 <= float(rows[-1]["accuracy_multi"]) <= 1.0 and "f1_macro" in rows[-1]


def test_biwi_points_recipe(biwi_standin: Path, tmp_path: Path) -> None:
    from imgcls.data.datablock import build_data
    from imgcls.recipes.biwi import head_centre

    frame = biwi_standin / "01" / "frame_00000_rgb.jpg"
    pose = np.array([float(v) for v in frame.with_name("frame_00000_pose.txt").read_text().split()[-3:]])
    assert np.allclose(head_centre(frame), [pose[0] * 500 / pose[2] + 160, pose[1] * 500 / pose[2] + 120], atol=1e-3)
    spec = load_spec(
        CONFIGS / "biwi_points.yaml",
        [
            f"data.path={biwi_standin}",
            "augment.size=[24, 32]",
            "data.bs=4",
            "data.num_workers=0",
            "model.arch=xresnet_tiny",
            "model.pretrained=false",
            "train.stages.0.epochs=1",
        ],
    )
    data = build_data(spec.data)
    assert data.target.kind == "point" and len(data.split.valid) == 8  # person 13 only
    run = train(spec, tmp_path / "biwi", quiet=True)
    assert float(_metrics(run)[-1]["mae"]) >= 0.0


@pytest.mark.parametrize(
    "name", ["demo", "pets_discriminative", "imagenette_baseline", "demo_multilabel", "demo_points"]
)
def test_other_recipes_load(name: str) -> None:
    spec = load_spec(CONFIGS / f"{name}.yaml")
    assert spec.train.stages
