"""`imgcls summary` names the training-only policy and random erasing when the spec sets them, and warns about
imbalanced classes."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_spec

from imgcls.commands.summary import label_example, summarize
from imgcls.report.console import Console
from imgcls.spec.load import spec_from_dict


def test_policy_and_erasing_get_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    plain = spec_from_dict(tiny_spec("demo:folder@0.02"))
    assert summarize(plain, Console(quiet=True)) == 0
    without = capsys.readouterr().out
    assert "policy" not in without and "random erasing" not in without
    spec = spec_from_dict(
        tiny_spec(
            "demo:folder@0.02",
            augment__policy={"kind": "rand_augment", "n": 3, "magnitude": 12},
            augment__erasing={"p": 0.4, "mode": "rand", "max_count": 2},
        )
    )
    assert summarize(spec, Console(quiet=True)) == 0
    lines = capsys.readouterr().out.splitlines()
    policy = [line for line in lines if line.strip().startswith("policy")]
    erasing = [line for line in lines if line.strip().startswith("random erasing")]
    assert policy == ["  policy           rand_augment: 3 ops at magnitude 12/30 per image (geometric ops in the "
                      "resample, colour ops after it)"]  # fmt: skip
    assert erasing == ["  random erasing   p 0.4, 1..2 rectangle(s) per image, rand fill, after normalization"]
    # in pipeline order: the policy right after the resample, erasing after normalization
    normalize = next(i for i, line in enumerate(lines) if line.strip().startswith("normalize"))
    assert lines.index(policy[0]) < normalize < lines.index(erasing[0])


def test_labels_are_shown_in_words_not_numpy_reprs(capsys: pytest.CaptureFixture[str]) -> None:
    raw = tiny_spec(
        "demo:points@0.05",
        data__blocks=["image", "point"],
        data__labels={"kind": "point_file", "find": r"_rgb\.jpg$", "replace": "_pts.txt"},
        data__split={"kind": "folder_name", "valid": ["06"]},
        train__metrics=["rmse"],
    )
    assert summarize(spec_from_dict(raw), Console(quiet=True)) == 0
    printed = capsys.readouterr().out
    assert "array(" not in printed and "dtype" not in printed
    labels = next(line for line in printed.splitlines() if line.startswith("labels"))
    assert re.fullmatch(r"labels +point_file, e\.g\. \([\d.]+, [\d.]+\) for 01/frame_0000_rgb\.jpg", labels)
    target = next(line for line in printed.splitlines() if line.strip().startswith("target "))
    assert re.fullmatch(r" +target +1 point\(s\): \(-?[\d.]+, -?[\d.]+\) in \[-1, 1\]", target)
    assert label_example(np.array([[272.0, 130.0]], dtype=np.float32)) == "(272, 130)"
    assert label_example(["cat", "dog"]) == "['cat', 'dog']" and label_example([np.float32(0.5)]) == "[0.5]"


def test_labels_that_differ_only_in_case_are_flagged(
    image_folder: Callable[..., Path], write_spec: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from trained_runs import run_cli

    root = image_folder({"Coat": 3, "coat": 3, "bag": 3})
    data = {"path": str(root), "split": {"kind": "grandparent"}, "item_tfm": {"kind": "resize", "size": 32}}
    data["num_workers"] = 0
    assert run_cli("summary", str(write_spec({"data": data}))) == 0
    printed = capsys.readouterr().out
    assert "vocab             3: Coat, bag, coat" in printed
    assert "'Coat', 'coat' differ only in case" in printed and "transforms: [lower]" in printed
    data["labels"] = {"kind": "parent_folder", "transforms": ["lower"]}
    assert run_cli("summary", str(write_spec({"data": data}))) == 0
    printed = capsys.readouterr().out
    assert "vocab             2: bag, coat" in printed and "differ only in case" not in printed


def test_imbalanced_classes_get_a_warning_with_the_counts(
    image_folder: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = image_folder({"big": 13, "mid": 6, "small": 4})  # training counts 13, 6, 4: 3.25x
    spec = spec_from_dict(tiny_spec(str(root), data__bs=2, data__sampler="balanced"))
    assert summarize(spec, Console(quiet=True)) == 0
    out = capsys.readouterr().out
    assert (
        "warning: class imbalance: the largest training class 'big' has 13 items, 3.2x the 4 of the smallest, "
        "'small' (more than 3x); consider train.loss.class_weights: auto or data.sampler: balanced"
    ) in " ".join(out.split())
    assert "sampler           balanced: each training class drawn with probability 1/3" in out


def test_no_imbalance_warning_at_3x_or_less(
    image_folder: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = spec_from_dict(tiny_spec(str(image_folder({"big": 12, "small": 4})), data__bs=2))
    assert summarize(spec, Console(quiet=True)) == 0
    assert "class imbalance" not in capsys.readouterr().out


def test_the_imbalanced_recipe_warns(capsys: pytest.CaptureFixture[str]) -> None:
    from imgcls.spec import load_spec

    config = Path(__file__).parents[2] / "configs" / "demo_imbalanced.yaml"
    spec = load_spec(config, ["data.path=demo:imbalanced@0.1", "data.num_workers=0"])
    assert summarize(spec, Console(quiet=True)) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "counts (train/valid) circle 24/6, cross 24/6, ring 2/6, square 24/6, triangle 24/6" in out
    assert "the largest training class 'circle' has 24 items, 12.0x the 2 of the smallest, 'ring'" in out
