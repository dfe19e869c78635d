"""`imgcls summary` names the training-only policy and random erasing when the spec sets them."""

from __future__ import annotations

import pytest
from conftest import tiny_spec

from imgcls.commands.summary import summarize
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
