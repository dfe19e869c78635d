"""The spec: strict keys with line numbers and suggestions, typed overrides, a resolved form that round-trips."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from imgcls.errors import SpecError
from imgcls.spec import dump_spec, load_spec

VALID = """\
data:
  path: demo:folder
  item_tfm: {kind: resize, size: 64}
train:
  stages:
    - {schedule: fine_tune, epochs: 2, base_lr: 1.0e-3}
  metrics: [accuracy, {name: top_k_accuracy, k: 3}]
callbacks: [mixup, {name: save_best, monitor: accuracy}]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_valid_spec_loads_with_defaults(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, VALID))
    assert spec.name == "exp"  # the file's stem
    assert spec.data.item_tfm is not None and spec.data.item_tfm.size == (64, 64)
    assert spec.data.split.kind == "random" and spec.data.split.valid_pct == 0.2
    assert spec.augment.max_rotate == 10.0 and spec.augment.max_warp == 0.2 and spec.augment.p_affine == 0.75
    stage = spec.train.stages[0]
    assert stage.schedule == "fine_tune" and stage.lr_mult == 100.0 and stage.freeze_epochs == 1
    assert [m.name for m in spec.train.metrics] == ["accuracy", "top_k_accuracy"]
    assert [c.name for c in spec.callbacks] == ["mixup", "save_best"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data:\n  path: x\n  bss: 32\n", ["exp.yaml:3", "data.bss", "unknown key 'bss'", "did you mean 'bs'"]),
        ("data:\n  path: x\n  labels: {kind: regx}\n", ["exp.yaml:3", "data.labels.kind", "did you mean 'regex'"]),
        ("data:\n  path: x\nmodle: {arch: resnet18}\n", ["exp.yaml:3", "'modle'", "did you mean 'model'"]),
        ("data:\n  path: x\n  bs: -4\n", ["exp.yaml:3", "data.bs", "greater than 0"]),
        ("data:\n  path: x\n  bs: lots\n", ["exp.yaml:3", "data.bs", "valid integer"]),
        (
            "data:\n  path: x\ntrain:\n  stages:\n    - {schedule: fit_one_cycle, lr_mx: 1}\n",
            ["exp.yaml:5", "train.stages.0.lr_mx", "'lr_max'"],
        ),
        ("data:\n  path: x\ncallbacks: [mixpu]\n", ["exp.yaml:3", "callbacks.0.name", "did you mean 'mixup'"]),
        ("data:\n  path: x\n  path: y\n", ["exp.yaml:3", "appears twice"]),
        ("data: [1, 2\n", ["exp.yaml:2", "not valid YAML"]),
        ("data:\n  path: x\n  labels: {kind: regex, pattern: 'no_group'}\n", ["exp.yaml:3", "capture group"]),
        (
            "data:\n  path: x\naugment:\n  size: 32\n  policy: {kind: trivial_augmnet}\n",
            ["exp.yaml:5", "augment.policy.kind", "did you mean 'trivial_augment'", "rand_augment"],
        ),
        (
            "data:\n  path: x\naugment:\n  policy: {kind: trivial_augment, magnitude: 9}\n",
            ["exp.yaml:4", "augment.policy.magnitude", "unknown key 'magnitude'"],
        ),
        (
            "data:\n  path: x\naugment:\n  erasing: {p: 0.25, mode: pixle}\n",
            ["exp.yaml:4", "augment.erasing.mode", "'pixel'"],
        ),
    ],
)
def test_bad_specs_name_file_line_key_and_fix(tmp_path: Path, text: str, expected: list[str]) -> None:
    if "train:" not in text and "data: [" not in text:
        text += "train:\n  stages: [{schedule: fit}]\n"
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, text))
    message = str(caught.value)
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"


def test_metric_must_fit_the_target(tmp_path: Path) -> None:
    text = "data: {path: x, blocks: [image, point]}\ntrain: {stages: [{schedule: fit}], metrics: [accuracy]}\n"
    with pytest.raises(SpecError, match="does not apply to point targets"):
        load_spec(_write(tmp_path, text))


IMBALANCE = """\
data: {{path: x, blocks: [image, {target}], sampler: {sampler}}}
train: {{stages: [{{schedule: fit}}], loss: {loss}}}
callbacks: {callbacks}
"""


def _imbalance(
    tmp_path: Path, target: str = "category", sampler: str = "random", loss: str = "auto", callbacks: str = "[]"
) -> Path:
    text = IMBALANCE.format(target=target, sampler=sampler, loss=loss, callbacks=callbacks)
    return _write(tmp_path, text)


@pytest.mark.parametrize(
    ("target", "sampler", "loss", "callbacks", "message"),
    [
        ("category", "random", "{pos_weight: auto}", "[]", "train.loss.pos_weight does not apply to category targets"),
        ("category", "random", "{name: focal, alpha: 0.25}", "[]", "alpha does not apply to category targets"),
        ("multi_category", "random", "{class_weights: [1, 2]}", "[]", "class_weights does not apply to multi_cat"),
        ("point", "random", "{class_weights: auto}", "[]", "point targets; no weights"),
        ("category", "random", "{alpha: 0.25}", "[]", "alpha weights the focal loss; the loss is 'auto'"),
        ("category", "random", "{class_weights: [1, -2]}", "[]", "greater than 0"),
        ("multi_category", "balanced", "auto", "[]", "multi_category targets cannot be balanced"),
        (
            "category",
            "random",
            "auto",
            "[{name: save_best, monitor: ema_accuracy}]",
            "only {name: ema, validate: both}",
        ),
        ("category", "random", "auto", "[{name: ema, validate: sometimes}]", "'ema', 'model' or 'both'"),
    ],
)
def test_imbalance_and_ema_keys_must_fit(
    tmp_path: Path, target: str, sampler: str, loss: str, callbacks: str, message: str
) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        load_spec(_imbalance(tmp_path, target, sampler, loss, callbacks))


def test_imbalance_and_ema_keys_load_and_round_trip(tmp_path: Path) -> None:
    ema = "[{name: ema, decay: 0.999, warmup: true, validate: both}, {name: save_best, monitor: ema_accuracy}]"
    spec = load_spec(_imbalance(tmp_path, "category", "balanced", "{name: focal, gamma: 1, class_weights: auto}", ema))
    assert spec.data.sampler == "balanced" and spec.train.loss.class_weights == "auto"
    assert spec.callbacks[0].name == "ema" and spec.callbacks[0].validate == "both"
    assert load_spec(_write(tmp_path, dump_spec(spec))) == spec
    multi = load_spec(_imbalance(tmp_path, "multi_category", loss="{name: focal, alpha: 0.25, pos_weight: [1, 2]}"))
    assert multi.train.loss.pos_weight == [1.0, 2.0] and multi.train.loss.alpha == 0.25


def test_overrides_are_typed_and_reported_as_command_line(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID)
    spec = load_spec(path, ["data.bs=32", "augment.do_flip=false", "train.stages.0.epochs=5", "model.y_range=[-1, 1]"])
    assert spec.data.bs == 32 and spec.augment.do_flip is False
    assert spec.train.stages[0].epochs == 5 and spec.model.y_range == (-1.0, 1.0)
    with pytest.raises(SpecError) as caught:
        load_spec(path, ["data.bs=abc"])
    assert "--set data.bs=abc (command line)" in str(caught.value)
    with pytest.raises(SpecError, match="did you mean 'bs'"):
        load_spec(path, ["data.bss=3"])


def test_resolved_spec_round_trips(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, VALID))
    resolved = _write(tmp_path, dump_spec(spec))
    again = load_spec(resolved)
    assert again == spec
    assert yaml.safe_load(dump_spec(spec))["augment"]["max_zoom"] == 1.1  # every default written out


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")


def test_every_config_in_the_repository_is_valid(write_spec: Callable[..., Path]) -> None:
    for path in sorted(Path(__file__).parents[2].joinpath("configs").glob("*.yaml")):
        load_spec(path)
