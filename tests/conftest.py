"""Shared fixtures: a private IMGCLS_HOME, tiny generated images and spec files."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image


@pytest.fixture(scope="session", autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Generated demo data goes to a temporary IMGCLS_HOME; one torch thread per test process (xdist runs two)."""
    previous = os.environ.get("IMGCLS_HOME")
    os.environ["IMGCLS_HOME"] = str(tmp_path_factory.mktemp("imgcls-home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the hub
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # what runtime.threads: auto then gives every run
    torch.set_num_threads(1)
    yield
    if previous is None:
        os.environ.pop("IMGCLS_HOME", None)
    else:
        os.environ["IMGCLS_HOME"] = previous


def write_image(path: Path, size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30), **save: Any) -> Path:
    """A (width, height) image with a solid colour and a darker square in the top-left quarter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.empty((size[1], size[0], 3), dtype=np.uint8)
    pixels[:] = colour
    pixels[: size[1] // 4, : size[0] // 4] = (20, 20, 20)
    Image.fromarray(pixels).save(path, **save)
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Build root/<split>/<label>/<n>.jpg (or root/<label>/<n>.jpg with splits=None)."""

    def build(
        labels: dict[str, int], splits: tuple[str, ...] | None = ("train", "valid"), size: tuple[int, int] = (48, 40)
    ) -> Path:
        root = tmp_path / "images"
        rng = np.random.default_rng(0)
        for split in splits or ("",):
            for label, count in labels.items():
                for number in range(count):
                    colour = tuple(int(c) for c in rng.integers(40, 255, size=3))
                    write_image(root / split / label / f"{number}.jpg", size, colour)  # type: ignore[arg-type]
        return root

    return build


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec (dict) as YAML; a minimal train section is added when missing."""

    def write(spec: dict[str, Any], name: str = "spec.yaml") -> Path:
        spec = {"train": {"stages": [{"schedule": "fit_one_cycle", "epochs": 1}]}, **spec}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return write


TINY_MODEL = {"arch": "xresnet_tiny", "head": {"lin_ftrs": [], "ps": 0.0}}


def tiny_spec(path: str, **overrides: Any) -> dict[str, Any]:
    """A spec that trains in seconds: tiny demo data at 32 px, the tiny model, no workers."""
    spec: dict[str, Any] = {
        "name": "tiny",
        "seed": 7,
        "data": {
            "path": path,
            "split": {"kind": "grandparent"},
            "item_tfm": {"kind": "resize", "size": 40},
            "bs": 8,
            "num_workers": 0,
        },
        "augment": {"size": 32},
        "model": copy.deepcopy(TINY_MODEL),  # callers change it: never the shared default
        "train": {"stages": [{"schedule": "fit_one_cycle", "epochs": 2, "lr_max": 3e-3}], "metrics": ["accuracy"]},
        "runtime": {"log_every": 2},
    }
    for dotted, value in overrides.items():
        node = spec
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return spec


# With @pytest.mark.gpu on every test that needs CUDA: `pytest -m gpu` selects them, and they skip without one.
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
