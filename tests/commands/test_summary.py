"""`imgcls summary` names the training-only policy and random erasing when the spec sets them."""

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
