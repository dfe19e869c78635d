"""Tiny trained runs of each target kind, trained once per test process and shared by the evaluate tests.

Import `trained_run` in a module-scoped fixture; tests must not write into the returned folder (copy it first),
because another test module of the same process reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_spec

from imgcls.spec.load import spec_from_dict

_RUNS: dict[str, Path] = {}


def _classification() -> dict[str, Any]:
    return tiny_spec("demo:folder@0.02")


def _multilabel() -> dict[str, Any]:
    spec = tiny_spec("demo:multilabel@0.05", data__blocks=["image", "multi_category"])
    spec["data"].update(
        items={"kind": "csv", "csv": "labels.csv", "path_col": "fname", "prefix": "images/"},
        labels={"kind": "column", "column": "labels", "delimiter": " "},
        split={"kind": "column", "column": "is_valid"},
    )
    spec["train"]["metrics"] = [{"name": "accuracy_multi", "thresh": 0.4}, "f1_macro"]
    return spec


def _points() -> dict[str, Any]:
    # Non-square padded items and a centre square crop on validation: every frame change predict must undo.
    spec = tiny_spec(
        "demo:points@0.05",
        data__blocks=["image", "point"],
        data__item_tfm={"kind": "resize", "size": [40, 56], "method": "pad"},
        augment__min_scale=0.8,
        train__metrics=["rmse"],
    )
    spec["model"]["y_range"] = [-1.0, 1.0]
    spec["data"].update(
        labels={"kind": "point_file", "find": r"_rgb\.jpg$", "replace": "_pts.txt"},
        split={"kind": "folder_name", "valid": ["06"]},
    )
    return spec


def disc_height(path: Path) -> float:
    """A regression label from a callable: the disc centre's row in the original image as a fraction of its height."""
    from PIL import Image

    _, y = (float(v) for v in path.with_name(path.name.replace("_rgb.jpg", "_pts.txt")).read_text().split())
    with Image.open(path) as image:
        return y / image.height


def _regression() -> dict[str, Any]:
    spec = tiny_spec(
        "demo:points@0.05",
        data__blocks=["image", "regression"],
        data__labels={"kind": "callable", "function": "trained_runs:disc_height"},
        data__split={"kind": "folder_name", "valid": ["06"]},
        train__metrics=["mae", "rmse"],
    )
    spec["model"]["y_range"] = [0.0, 1.0]
    return spec


def _grey() -> dict[str, Any]:
    spec = tiny_spec("demo:folder@0.02")
    spec["model"]["n_in"] = 1  # batches become one luma channel on the device
    return spec


SPECS = {
    "category": _classification,
    "multi_category": _multilabel,
    "point": _points,
    "regression": _regression,
    "grey": _grey,
}


def spec_dict(kind: str) -> dict[str, Any]:
    return SPECS[kind]()


def trained_run(kind: str, factory: pytest.TempPathFactory) -> Path:
    """The run folder of a tiny model of `kind` (a key of SPECS), trained on first use."""
    if kind not in _RUNS:
        from imgcls.train.run import train

        spec = spec_from_dict(spec_dict(kind))
        _RUNS[kind] = train(spec, factory.mktemp(f"run-{kind}") / "run", quiet=True)
    return _RUNS[kind]


def copy_run(run: Path, into: Path) -> Path:
    """A private copy of a shared run folder, for commands that write into the run folder."""
    import shutil

    return Path(shutil.copytree(run, into / run.name))


def run_cli(*args: str) -> int:
    """`imgcls ARGS...` in this process; returns the exit code."""
    from imgcls.cli import app

    code = app(list(args), standalone_mode=False, prog_name="imgcls")
    return int(code or 0)
