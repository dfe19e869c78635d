"""The run record: everything a checkpoint knows besides its tensors, as one typed model.

It is written into the safetensors header of every checkpoint (`checkpoints/best|last.safetensors`) and read back
here only, and an export's `preprocess.json` is derived from it (`ExportRecord.from_run`). Reading validates the
JSON: a hand-edited or foreign header is a clear error, never a KeyError deep in a command.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imgcls import __version__
from imgcls.errors import TrainingError
from imgcls.spec.data import AugmentSpec, ItemTfm
from imgcls.spec.load import spec_from_dict
from imgcls.spec.schema import Spec
from imgcls.spec.train import ModelSpec
from imgcls.targets import Target, target_from_record

FORMAT = 1  # the checkpoint header layout; format 1 headers of earlier versions read unchanged
EXPORT_FORMAT = "imgcls-export"
EXPORT_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetRecord(_Record):
    kind: str
    n_out: int
    vocab: list[str] = Field(default_factory=list)
    n_points: int = 0

    @classmethod
    def of(cls, target: Target) -> TargetRecord:
        return cls.model_validate(target.to_record())

    def block(self) -> Target:
        return target_from_record(self.model_dump())


class NormalizerRecord(_Record):
    """Per-channel statistics on the [0, 1] scale."""

    mean: list[float]
    std: list[float]


class PositionRecord(_Record):
    """Where the run is (imgcls.train.state.Position): resumable at any batch boundary."""

    stage: int = 0
    phase: int = 0
    epoch: int = 0
    batch: int = 0
    step: int = 0
    epochs_done: int = 0


class SmoothRecord(_Record):
    value: float = 0.0
    count: int = 0


class OptimizerRecord(_Record):
    """The optimizer's param groups and non-tensor state; its tensors are stored as `optim.<id>.<name>`."""

    param_groups: list[dict[str, Any]]
    scalars: dict[str, dict[str, Any]] = Field(default_factory=dict)


class RunRecord(_Record):
    """What a checkpoint holds besides weights, optimizer tensors and RNG states."""

    format: int = FORMAT
    imgcls_version: str = __version__
    written: str = ""
    kind: Literal["best", "last"]
    spec: dict[str, Any]  # the resolved spec (dump_spec's JSON form)
    target: TargetRecord
    normalizer: NormalizerRecord | None = None
    size: tuple[int, int] | None = None  # (height, width) of the model input at this checkpoint's stage
    position: PositionRecord = Field(default_factory=PositionRecord)
    phase_name: str = ""
    smooth: SmoothRecord = Field(default_factory=SmoothRecord)
    callbacks: dict[str, dict[str, Any]] = Field(default_factory=dict)
    scaler: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)  # the epoch row this checkpoint was written after
    optimizer: OptimizerRecord | None = None
    # The loss's class_weights (or multi-label pos_weight), resolved: evaluation computes the same valid_loss.
    loss_weights: list[float] | None = None

    def stamped(self) -> RunRecord:
        return self.model_copy(update={"written": datetime.now(timezone.utc).isoformat(timespec="seconds")})

    def spec_model(self, origin: str) -> Spec:
        """The stored spec, validated (errors name `origin`, the checkpoint file)."""
        return spec_from_dict(self.spec, origin=origin)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, text: str, where: Path) -> RunRecord:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise TrainingError(f"{where}: the checkpoint header is not valid JSON ({err.msg})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else None
            raise TrainingError(f"{where} has checkpoint format {found}; this imgcls reads format {FORMAT}")
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            at = ".".join(str(part) for part in first["loc"])
            raise TrainingError(
                f"{where}: the checkpoint header is malformed at '{at}': {first['msg']}",
                hint="the file was edited or written by another program; use another checkpoint of the run",
            ) from None


# --- exports -----------------------------------------------------------------------------------------------


class BatchResizeRecord(_Record):
    size: tuple[int, int] | None
    min_scale: float = 1.0
    pad_mode: str = "reflection"
    flip_vert: bool = False


class ExportModelRecord(_Record):
    arch: str
    n_in: Literal[1, 3] = 3
    y_range: tuple[float, float] | None = None
    head: dict[str, Any] = Field(default_factory=dict)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    def spec(self) -> ModelSpec:
        """The model spec to rebuild it: never pretrained (the export holds every weight), never from a file."""
        return ModelSpec.model_validate({**self.model_dump(), "pretrained": False, "weights": None})


class OnnxRecord(_Record):
    file: str
    exporter: str
    opset: int
    max_abs_diff: float
    tolerance: float


class ExportRecord(_Record):
    """`preprocess.json` of an export folder: the model and its validation-time preprocessing, declaratively."""

    format: Literal["imgcls-export"] = "imgcls-export"
    format_version: int = EXPORT_VERSION
    imgcls_version: str = __version__
    target: TargetRecord
    threshold: float
    activation: str  # softmax | sigmoid | identity: how raw outputs become probabilities or values
    model: ExportModelRecord
    item_transform: dict[str, Any] | None
    batch_resize: BatchResizeRecord
    normalize: NormalizerRecord | None
    input: dict[str, Any]
    output: dict[str, Any]
    source: dict[str, Any]
    onnx: OnnxRecord | None = None

    @classmethod
    def from_run(cls, record: RunRecord, spec: Spec, threshold: float, activation: str, source: str) -> ExportRecord:
        size = list(record.size) if record.size is not None else None
        spatial: list[int | str] = list(size) if size is not None else ["height", "width"]
        model = spec.model.model_dump(mode="json", include={"arch", "n_in", "y_range", "head", "kwargs"})
        return cls(
            target=record.target,
            threshold=threshold,
            activation=activation,
            model=ExportModelRecord.model_validate(model),
            item_transform=spec.data.item_tfm.model_dump(mode="json") if spec.data.item_tfm is not None else None,
            batch_resize=BatchResizeRecord(
                size=record.size,
                min_scale=spec.augment.min_scale,
                pad_mode=spec.augment.pad_mode,
                flip_vert=spec.augment.flip_vert,
            ),
            normalize=record.normalizer,
            input={
                "name": "images",
                "shape": ["batch", spec.model.n_in, *spatial],
                "dtype": "float32",
                "pixels": _pixels_text(spec.model.n_in),
            },
            output={"name": "outputs", "shape": ["batch", record.target.n_out], "values": "raw; apply `activation`"},
            source={
                "run": source,
                "checkpoint": record.kind,
                "metrics": {k: v for k, v in record.metrics.items() if isinstance(v, int | float)},
            },
        )

    def item_tfm_spec(self) -> ItemTfm | None:
        from pydantic import TypeAdapter

        return TypeAdapter(ItemTfm | None).validate_python(self.item_transform)

    def augment_spec(self) -> AugmentSpec:
        resize = self.batch_resize
        return AugmentSpec.model_validate(
            {"min_scale": resize.min_scale, "pad_mode": resize.pad_mode, "flip_vert": resize.flip_vert}
        )

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        if data["onnx"] is None:  # an export without ONNX says nothing about it
            del data["onnx"]
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def read(cls, file: Path) -> ExportRecord:
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise TrainingError(f"cannot read {file}: {err}") from None
        if (
            not isinstance(raw, dict)
            or raw.get("format") != EXPORT_FORMAT
            or int(raw.get("format_version", 0)) > EXPORT_VERSION
        ):
            found = (raw.get("format"), raw.get("format_version")) if isinstance(raw, dict) else (None, None)
            raise TrainingError(
                f"{file} is not an imgcls export this version reads (format {found[0]!r} version {found[1]!r})",
                hint="export the run again with this imgcls",
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            at = ".".join(str(part) for part in first["loc"])
            raise TrainingError(f"{file} is malformed at '{at}': {first['msg']}") from None


def _pixels_text(n_in: int) -> str:
    grey = "; grey models: the ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B as one channel" if n_in == 1 else ""
    return f"RGB / 255{grey}, then (x - mean) / std per channel when normalize is set"
