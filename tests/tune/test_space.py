"""The search space against the spec: dotted paths and values checked up front, errors at the entry's line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import tiny_spec

from imgcls.errors import SpecError
from imgcls.tune.space import load_tune

TUNE = """\
tune:
  space:
    train.stages.0.lr_max: {log_uniform: [1e-4, 1e-2]}
    data.bs: {choice: [4, 8]}
    augment.min_scale: {uniform: [0.35, 1.0]}
  n_trials: 3
"""


def _spec_file(tmp_path: Path, tune: str = TUNE) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_spec("demo:folder"), sort_keys=False) + tune)
    return path


def _line(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), start=1) if text in line)


def test_a_valid_space_sets_values_at_its_paths(tmp_path: Path) -> None:
    spec, tune, space = load_tune(_spec_file(tmp_path))
    assert spec.name == "tiny" and tune.n_trials == 3 and list(space.dimensions) == list(tune.space)
    trial = space.spec_for({"train.stages.0.lr_max": 5e-4, "data.bs": 4, "augment.min_scale": 0.5}, "exp-trial-0001")
    assert trial.name == "exp-trial-0001" and trial.tune is None
    assert trial.train.stages[0].lr_max == 5e-4 and trial.data.bs == 4 and trial.augment.min_scale == 0.5
    assert trial.model == spec.model and trial.train.stages[0].epochs == spec.train.stages[0].epochs


def test_an_unknown_path_names_the_line_and_the_closest_key(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, TUNE.replace("lr_max:", "lr_maxx:"))
    with pytest.raises(SpecError) as caught:
        load_tune(path)
    message = caught.value.message
    assert f"{path}:{_line(path, 'lr_maxx')}: train.stages.0.lr_maxx: unknown key 'lr_maxx'" in message
    assert "(did you mean 'lr_max'?)" in message


def test_a_value_the_spec_refuses_names_the_entry(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, TUNE.replace("[0.35, 1.0]", "[0.35, 1.5]"))
    with pytest.raises(SpecError) as caught:
        load_tune(path)
    message = caught.value.message
    assert message.startswith("search space: augment.min_scale = 1.5 gives an invalid spec")
    line = _line(path, "augment.min_scale")
    assert f"{path}:{line}: augment.min_scale: Input should be less than or equal to 1 (got 1.5)" in message


def test_a_space_file_is_named_in_its_errors(tmp_path: Path) -> None:
    config = _spec_file(tmp_path, "")
    space = tmp_path / "space.yaml"
    space.write_text("space:\n  data.bs: {choice: [4, 8]}\n  train.stages.1.lr_max: {uniform: [0.1, 0.2]}\n")
    with pytest.raises(SpecError, match=f"{space}:3: tune.space.train.stages.1.lr_max: train.stages has no item 1"):
        load_tune(config, space)
    space.write_text("space:\n  data.bs: {choice: [4, 8]}\nmetric: acuracy\n")
    with pytest.raises(SpecError, match=f"{space}:3: tune.metric: 'acuracy' .*did you mean 'accuracy'"):
        load_tune(config, space)
    space.write_text("tune:\n  space:\n    data.bss: {choice: [4, 8]}\n")  # the wrapped form works too
    with pytest.raises(SpecError, match=f"{space}:3: data.bss: unknown key 'bss' \\(did you mean 'bs'\\?\\)"):
        load_tune(config, space)


def test_the_demo_tuning_recipe_is_valid() -> None:
    spec, tune, space = load_tune(Path(__file__).parents[2] / "configs" / "demo_tune.yaml")
    assert spec.name == "demo_tune" and tune.n_trials == 8 and len(space.dimensions) == 3
    assert [cb.name for cb in spec.callbacks] == ["mlflow"]


def test_overrides_reach_the_tune_section_and_a_spec_without_one_is_refused(tmp_path: Path) -> None:
    _, tune, _ = load_tune(_spec_file(tmp_path), overrides=["tune.n_trials=7", "tune.metric=accuracy"])
    assert tune.n_trials == 7 and tune.metric == "accuracy"
    with pytest.raises(SpecError, match="has no tune: section"):
        load_tune(_spec_file(tmp_path, ""))
    with pytest.raises(SpecError, match="'name' cannot be searched"):
        load_tune(_spec_file(tmp_path, "tune:\n  space:\n    name: {choice: [a, b]}\n"))
