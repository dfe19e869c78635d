"""The search space: dotted paths of the spec, each checked against the spec, turned into Optuna suggestions.

Every end of a range and every choice is tried in the spec before a trial runs, so a misspelt path or a value
the spec refuses stops `imgcls tune` at once, with the file and line of the search space entry.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgcls.errors import SpecError
from imgcls.registry import did_you_mean
from imgcls.spec.load import (
    KeyPath,
    SpecSource,
    apply_overrides,
    dotted_keys,
    read_spec,
    set_path,
    validate_spec,
)
from imgcls.spec.schema import Spec
from imgcls.spec.tune import ChoiceSpec, IntUniformSpec, LogUniformSpec, TuneSpec, UniformSpec
from imgcls.train.metrics import build_metric

if TYPE_CHECKING:
    import optuna

Dimension = UniformSpec | LogUniformSpec | IntUniformSpec | ChoiceSpec
_FORBIDDEN = ("tune", "name")  # searching these would change the study itself, not the model


def candidates(dimension: Dimension) -> list[Any]:
    """The values a dimension is checked with: both ends of a range, every choice."""
    if isinstance(dimension, ChoiceSpec):
        return list(dimension.choices)
    return [dimension.low, dimension.high]


@dataclass(frozen=True)
class SearchSpace:
    """The spec's raw mapping (without its tune section), where each key came from, and the dimensions."""

    raw: dict[str, Any]
    source: SpecSource
    dimensions: dict[str, Dimension]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """One value per dimension, from the study's sampler; the parameter names are the dotted paths."""
        params: dict[str, Any] = {}
        for name, dim in self.dimensions.items():
            if isinstance(dim, ChoiceSpec):
                params[name] = trial.suggest_categorical(name, dim.choices)
            elif isinstance(dim, IntUniformSpec):
                params[name] = trial.suggest_int(name, dim.low, dim.high, step=dim.step, log=dim.log)
            else:
                params[name] = trial.suggest_float(name, dim.low, dim.high, log=isinstance(dim, LogUniformSpec))
        return params

    def spec_for(self, params: Mapping[str, Any], name: str) -> Spec:
        """The spec with `params` set at their dotted paths and `name` as its name."""
        raw = copy.deepcopy(self.raw)
        raw["name"] = name
        for dotted, value in params.items():
            set_path(raw, dotted_keys(dotted), value, f"tune.space.{dotted}")
        return validate_spec(raw, self.source, title=f"the spec of {name} is invalid")


def _merge_space_file(raw: dict[str, Any], source: SpecSource, space_file: Path) -> None:
    """Put a --space file's tune section into `raw` (replacing the spec's own), keeping its lines."""
    tune_raw, tune_source = read_spec(space_file)
    lines = tune_source.lines
    if "tune" in tune_raw:  # a file with a tune: section, like a spec file's
        if set(tune_raw) != {"tune"}:
            extra = ", ".join(sorted(str(k) for k in tune_raw if k != "tune"))
            raise SpecError(f"{space_file}: a --space file holds the tune section only; it also has: {extra}")
        tune_raw = tune_raw["tune"] or {}
    else:  # the section's keys at the top level
        lines = {("tune", *path): line for path, line in lines.items()}
    source.lines = {path: line for path, line in source.lines.items() if path[:1] != ("tune",)}
    source.lines.update(lines)
    source.files.update({path: str(space_file) for path in lines})
    raw["tune"] = tune_raw


def _located(source: SpecSource, entry: KeyPath, target: KeyPath) -> SpecSource:
    """A copy of `source` in which `target` is blamed on wherever the search space entry `entry` was written."""
    lines, files, overrides = dict(source.lines), dict(source.files), dict(source.overrides)
    for end in range(len(entry), 0, -1):
        prefix = entry[:end]
        if prefix in source.overrides:
            overrides[target] = source.overrides[prefix]
            break
        if prefix in source.lines:
            lines[target] = source.lines[prefix]
            files[target] = source.files.get(prefix, source.file)
            overrides.pop(target, None)
            break
    return replace(source, lines=lines, files=files, overrides=overrides)


def check_dimension(raw: dict[str, Any], source: SpecSource, dotted: str, dimension: Dimension) -> None:
    """Every candidate value of `dotted` must give a valid spec; errors point at the search space entry."""
    entry: KeyPath = ("tune", "space", dotted)
    where = source.where(entry)
    keys = dotted_keys(dotted)
    if keys[0] in _FORBIDDEN:
        raise SpecError(f"{where}: tune.space.{dotted}: '{keys[0]}' cannot be searched", hint="search model keys")
    located = _located(source, entry, keys)
    for value in candidates(dimension):
        trial_raw = copy.deepcopy(raw)
        set_path(trial_raw, keys, value, f"{where}: tune.space.{dotted}")
        validate_spec(
            trial_raw,
            located,
            title=f"search space: {dotted} = {value!r} gives an invalid spec",
            hint="every end of a range and every choice must be a valid value at that path",
        )


def metric_columns(spec: Spec) -> list[str]:
    """The metrics.csv columns a trial can be judged by."""
    return ["train_loss", "valid_loss", *(build_metric(metric).name for metric in spec.train.metrics)]


def check_metric(spec: Spec, tune: TuneSpec, source: SpecSource) -> None:
    columns = metric_columns(spec)
    if tune.metric not in columns:
        raise SpecError(
            f"{source.where(('tune', 'metric'))}: tune.metric: '{tune.metric}' is not a column of metrics.csv"
            f"{did_you_mean(tune.metric, columns)}",
            hint=f"use one of: {', '.join(columns)} (add metrics under train.metrics)",
        )


def load_tune(
    config: Path, space_file: Path | None = None, overrides: list[str] | None = None
) -> tuple[Spec, TuneSpec, SearchSpace]:
    """The spec, its tune section (from the spec file or `space_file`) and the checked search space."""
    raw, source = read_spec(config)
    if space_file is not None:
        _merge_space_file(raw, source, space_file)
    apply_overrides(raw, source, overrides)
    raw.setdefault("name", config.stem)
    spec = validate_spec(raw, source)
    if spec.tune is None:
        raise SpecError(
            f"{config} has no tune: section",
            hint="add one (tune: {space: {train.stages.0.lr_max: {log_uniform: [1.0e-4, 1.0e-2]}}}) "
            "or pass --space tune.yaml",
        )
    base = {key: value for key, value in raw.items() if key != "tune"}
    for dotted, dimension in spec.tune.space.items():
        check_dimension(base, source, dotted, dimension)
    check_metric(spec, spec.tune, source)
    return spec, spec.tune, SearchSpace(base, source, dict(spec.tune.space))
