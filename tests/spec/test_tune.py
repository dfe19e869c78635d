"""The tune: section's models: the short dimension forms, their checks, pruners by name; never written out."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import tiny_spec

from imgcls.errors import SpecError
from imgcls.spec import dump_spec
from imgcls.spec.load import spec_from_dict
from imgcls.spec.tune import ChoiceSpec, IntUniformSpec, LogUniformSpec, SuccessiveHalvingPrunerSpec, UniformSpec


def _with_tune(**tune: Any) -> Any:
    raw = tiny_spec("demo:folder")
    raw["tune"] = tune
    return spec_from_dict(raw)


def test_short_forms_become_typed_dimensions() -> None:
    spec = _with_tune(
        space={
            "train.stages.0.lr_max": {"log_uniform": ["1e-4", 1.0e-2]},  # PyYAML reads 1e-4 as a string
            "augment.min_scale": {"uniform": [0.35, 1.0]},
            "data.bs": {"choice": [32, 64]},
            "train.stages.0.epochs": {"int_uniform": [1, 9], "step": 2},
        },
        pruner="successive_halving",
    )
    assert spec.tune is not None
    space = spec.tune.space
    assert space["train.stages.0.lr_max"] == LogUniformSpec(kind="log_uniform", low=1e-4, high=1e-2)
    assert space["augment.min_scale"] == UniformSpec(kind="uniform", low=0.35, high=1.0)
    assert space["data.bs"] == ChoiceSpec(kind="choice", choices=[32, 64])
    assert space["train.stages.0.epochs"] == IntUniformSpec(kind="int_uniform", low=1, high=9, step=2)
    assert spec.tune.pruner == SuccessiveHalvingPrunerSpec(kind="successive_halving")
    assert spec.tune.metric == "valid_loss" and spec.tune.n_trials == 20 and spec.tune.storage is None
    # A trial's spec.yaml and checkpoints hold the training spec only.
    assert "tune" not in spec.model_dump() and "tune:" not in dump_spec(spec)


@pytest.mark.parametrize(
    ("dimension", "message"),
    [
        ({"log_unifrom": [1, 2]}, "unknown kind 'log_unifrom' (did you mean 'log_uniform'?)"),
        ({"uniform": [3, 2]}, "needs low < high, got [3.0, 2.0]"),
        ({"uniform": [1]}, "uniform takes [low, high], got [1]"),
        ({"log_uniform": [0, 1]}, "greater than 0"),
        ({"choice": []}, "choice takes a non-empty list"),
        ({"choice": [[1, 2]]}, "tune.space.x.choice"),  # lists are not values Optuna can store
        ({"int_uniform": [1, 8], "stepp": 2}, "unknown key 'stepp' (did you mean 'step'?)"),
        ({"int_uniform": [0, 8], "log": True}, "log: true needs step 1 and low >= 1"),
        ({"uniform": [0, 1], "choice": [1]}, "names one kind, got uniform and choice"),
        (0.5, "a search dimension is one of"),
    ],
)
def test_bad_dimensions_say_what_is_wrong(dimension: Any, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        _with_tune(space={"x": dimension})
    assert message in caught.value.message and "tune.space.x" in caught.value.message


def test_unknown_tune_keys_and_pruners_get_suggestions() -> None:
    with pytest.raises(SpecError, match="unknown key 'n_trails' \\(did you mean 'n_trials'\\?\\)"):
        _with_tune(space={"x": {"uniform": [0, 1]}}, n_trails=3)
    with pytest.raises(SpecError, match="unknown value 'medain' \\(did you mean 'median'\\?\\)"):
        _with_tune(space={"x": {"uniform": [0, 1]}}, pruner="medain")
