"""A dot drawn at a labelled point stays under its label through the whole pipeline: point file -> item
transform (every resize method, train and valid) -> fused batch augmentation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.augment.pipeline import BatchAugment
from imgcls.data.dataset import ImageDataset
from imgcls.data.item_tfms import RandomResizedCrop, Resize
from imgcls.data.splits import SplitIndices
from imgcls.spec.data import AugmentSpec
from imgcls.targets import TARGETS

X, Y, W, H = 150.5, 60.5, 240, 160  # the dot's centre (pixel 150, row 60) in a 240x160 image


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pixels = np.zeros((H, W, 3), dtype=np.uint8)
    pixels[int(Y) - 2 : int(Y) + 3, int(X) - 2 : int(X) + 3] = 255
    path = tmp_path_factory.mktemp("dot") / "dot.png"
    Image.fromarray(pixels).save(path)
    return path


TRANSFORMS = {
    "crop": Resize((96, 96), "crop"),
    "pad": Resize((96, 96), "pad", "zeros"),
    "squish": Resize((80, 120), "squish"),
    "rrc": RandomResizedCrop((96, 96), min_scale=0.6),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("train", [False, True])
def test_dot_stays_under_its_label(image: Path, name: str, train: bool) -> None:
    split = SplitIndices(np.array([0]), np.array([0]))
    targets = TARGETS.get("point").encode([[X, Y]], split.train, split.valid)
    dataset = ImageDataset([image], targets, np.array([0]), TRANSFORMS[name], train, seed=0)
    spec = AugmentSpec(max_rotate=20, max_zoom=1.3, max_warp=0.2, max_lighting=0, p_affine=1.0, pad_mode="zeros")
    augment = BatchAugment(spec, size=(64, 64))
    checked = 0
    for epoch in range(6):
        pixels, target, _ = dataset[(0, epoch)]
        images = torch.from_numpy(np.stack([pixels])).permute(0, 3, 1, 2)
        points = torch.from_numpy(np.stack([target]))
        out, moved = augment(images, points, train=train, generator=torch.Generator().manual_seed(epoch))
        assert moved is not None
        expected = ((float(moved[0, 0, 0]) + 1) / 2 * 64, (float(moved[0, 0, 1]) + 1) / 2 * 64)
        if not (3 < expected[0] < 61 and 3 < expected[1] < 61):
            continue  # cropped out of the frame
        weight = out[0, 0].clamp(min=0)
        rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        found = (float((weight * cols).sum() / weight.sum()) + 0.5, float((weight * rows).sum() / weight.sum()) + 0.5)
        assert math.dist(found, expected) < 1.0, (name, train, epoch, found, expected)
        checked += 1
    assert checked >= 3
