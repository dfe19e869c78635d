"""The run record: everything a checkpoint knows besides its tensors, as one typed model.

It is written into the safetensors header of every checkpoint (`checkpoints/best|last.safetensors`) and read back
here only, and an export's `preprocess.json` is derived from it (`ExportRecord.from_run`). Reading validates the
JSON: a hand-edited or foreign header is a clear error, never a KeyError deep in a command.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imgcls import __version__
from imgcls.errors import TrainingError
from imgcls.spec.data import AugmentSpec, ItemTfm
from imgcls.spec.load import spec_from_dict
from imgcls.spec.schema import Spec
from imgcls.spec.train import ModelSpec
from imgcls.targets import Target, target_from_record
from imgcls.targets.calibration import Calibration, CalibrationFit

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


class SkippedRecord(_Record):
    """An item left out of the run because its file could not be read (data.on_bad_image: skip)."""

    path: str  # relative to the data root
    split: str
    reason: str


class DataRecord(_Record):
    """The run's data as items.csv in the run folder holds it: `fingerprint` is the sha256 of that file, so that
    an edited manifest is refused; `dtype` the encoded targets' numpy dtype."""

    manifest: str = "items.csv"
    fingerprint: str
    items: int
    dtype: str
    skipped: list[SkippedRecord] = Field(default_factory=list)


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
    # None in runs written before data manifests (they are evaluated only with --trust-spec)
    data: DataRecord | None = None
    # The split was given by the caller (imgcls audit --folds), not made by the spec's splitter: the run folder's
    # split.json lists its training and validation items.
    given_split: bool = False
    # The loss's class_weights (or multi-label pos_weight), resolved: evaluation computes the same valid_loss.
    loss_weights: list[float] | None = None

    def stamped(self) -> RunRecord:
        return self.model_copy(update={"written": datetime.now(timezone.utc).isoformat(timespec="seconds")})

    def spec_model(self, origin: str) -> Spec:
        """The stored spec, validated (errors name `origin`, the checkpoint file)."""
        return spec_from_dict(self.spec, origin=origin)

    def to_json(self) -> str:
        # Python's json keeps inf and NaN (a monitor's best before its first improvement, a diverged metric);
        # pydantic's JSON mode would turn them into null.
        data = self.model_dump()
        if not data["given_split"]:  # the spec's own split: headers stay as earlier versions wrote (and read) them
            del data["given_split"]
        return json.dumps(data)

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


# --- calibration ---------------------------------------------------------------------------------------------

CALIBRATION_FILE = "calibration.json"


def _reading_error(file: Path, err: ValidationError) -> TrainingError:
    first = err.errors()[0]
    at = ".".join(str(part) for part in first["loc"])
    return TrainingError(f"{file} is malformed at '{at}': {first['msg']}")


class CalibrationRecord(_Record):
    """A fitted calibration (imgcls.targets.calibration.Calibration), the checkpoint it was fitted for and what
    it changed: `imgcls interpret` writes it to <interpret folder>/calibration.json, `export --calibrate` copies it
    into preprocess.json."""

    method: Literal["temperature", "platt"]
    temperature: float | None = None  # temperature: calibrated = outputs / temperature
    a: list[float] = Field(default_factory=list)  # platt: calibrated = a * outputs + b, per output
    b: list[float] = Field(default_factory=list)
    checkpoint: str  # the checkpoint file the validation outputs came from
    checkpoint_kind: str
    checkpoint_written: str  # its record's timestamp: a later checkpoint of the same name is another model
    checkpoint_step: int
    n_items: int
    n_bins: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    note: str = ""  # why the map is not a real fit, if it is not (e.g. T = 1 when every item is right)

    @classmethod
    def of(cls, fit: CalibrationFit, checkpoint: Path, record: RunRecord) -> CalibrationRecord:
        calibration = fit.calibration
        return cls(
            method=calibration.method,
            temperature=calibration.temperature,
            a=list(calibration.a),
            b=list(calibration.b),
            checkpoint=str(checkpoint),
            checkpoint_kind=record.kind,
            checkpoint_written=record.written,
            checkpoint_step=record.position.step,
            n_items=fit.n_items,
            n_bins=len(fit.bins_before),
            ece_before=fit.ece_before,
            ece_after=fit.ece_after,
            nll_before=fit.nll_before,
            nll_after=fit.nll_after,
            note=fit.note,
        )

    def calibration(self) -> Calibration:
        return Calibration(self.method, self.temperature, tuple(self.a), tuple(self.b))

    def fits(self, record: RunRecord) -> bool:
        """Whether it was fitted on the outputs of the checkpoint `record` describes."""
        return (self.checkpoint_kind, self.checkpoint_written, self.checkpoint_step) == (
            record.kind,
            record.written,
            record.position.step,
        )

    def write(self, file: Path) -> None:
        file.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")

    @classmethod
    def read(cls, file: Path) -> CalibrationRecord:
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TrainingError(
                f"no calibration at {file}", hint="fit one with `imgcls interpret RUN` (it writes calibration.json)"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise TrainingError(f"cannot read {file}: {err}") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            raise _reading_error(file, err) from None


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
    # Whether onnxruntime's outputs give the same decisions as PyTorch's at the export's threshold (None: older).
    decisions_agree: bool | None = None


class ExportRecord(_Record):
    """`preprocess.json` of an export folder: the model and its validation-time preprocessing, declaratively."""

    format: Literal["imgcls-export"] = "imgcls-export"
    format_version: int = EXPORT_VERSION
    imgcls_version: str = __version__
    target: TargetRecord
    # Multi-label decisions: probability > threshold, one for every label or one per label in vocab order.
    threshold: float | list[float]
    activation: str  # softmax | sigmoid | identity: how raw outputs become probabilities or values
    model: ExportModelRecord
    item_transform: dict[str, Any] | None
    batch_resize: BatchResizeRecord
    normalize: NormalizerRecord | None
    input: dict[str, Any]
    output: dict[str, Any]
    source: dict[str, Any]
    onnx: OnnxRecord | None = None
    # The run's training batch transform (its `augment:` section): what `predict --tta` augments with.
    tta_augment: dict[str, Any] | None = None
    # export --calibrate: applied to the raw outputs before `activation` (and inside model.onnx)
    calibration: CalibrationRecord | None = None

    @classmethod
    def from_run(
        cls, record: RunRecord, spec: Spec, threshold: float | tuple[float, ...], activation: str, source: str
    ) -> ExportRecord:
        size = list(record.size) if record.size is not None else None
        spatial: list[int | str] = list(size) if size is not None else ["height", "width"]
        model = spec.model.model_dump(mode="json", include={"arch", "n_in", "y_range", "head", "kwargs"})
        return cls(
            target=record.target,
            threshold=list(threshold) if isinstance(threshold, tuple) else threshold,
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
            tta_augment=spec.augment.model_dump(mode="json"),
        )

    def decision(self) -> float | tuple[float, ...]:
        """The threshold as the target blocks take it (a tuple when there is one per label)."""
        return tuple(self.threshold) if isinstance(self.threshold, list) else self.threshold

    def tta_spec(self) -> AugmentSpec | None:
        """The training batch transform for predict --tta (None in exports written before it was recorded)."""
        return None if self.tta_augment is None else AugmentSpec.model_validate(self.tta_augment)

    def calibrated(self, calibration: CalibrationRecord) -> ExportRecord:
        """This record with `calibration`, and its ONNX output stated as calibrated logits."""
        formula = calibration.calibration().formula()
        output = {**self.output, "values": f"calibrated logits, {formula} in the graph; apply `activation`"}
        return self.model_copy(update={"calibration": calibration, "output": output})

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
        for optional in ("onnx", "calibration"):  # an export without ONNX (or calibration) says nothing about it
            if data[optional] is None:
                del data[optional]
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
            raise _reading_error(file, err) from None


# --- per-label thresholds -------------------------------------------------------------------------------------

THRESHOLDS_FILE = "thresholds.json"  # in the run folder, written by `imgcls interpret --save-thresholds`


class ThresholdsRecord(_Record):
    """Per-label decision thresholds of a multi-label run, chosen on its validation set: predict and export use
    them instead of the spec's single threshold."""

    format: Literal["imgcls-thresholds"] = "imgcls-thresholds"
    labels: list[str]
    thresholds: list[Annotated[float, Field(ge=0.0, le=1.0)]]
    chosen_by: str
    checkpoint: str

    def for_vocab(self, vocab: Sequence[str], where: Path) -> tuple[float, ...]:
        """The thresholds in vocab order; labels that are not the run's are an error (another run's file)."""
        if list(vocab) != self.labels or len(self.thresholds) != len(self.labels):
            raise TrainingError(
                f"{where} holds thresholds for the labels {self.labels}, but the run's labels are {list(vocab)}",
                hint="choose them again: imgcls interpret RUN --save-thresholds (or delete the file)",
            )
        return tuple(self.thresholds)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"

    @classmethod
    def load(cls, run_dir: Path, vocab: Sequence[str]) -> tuple[float, ...] | None:
        """The run folder's saved per-label thresholds, or None when there are none."""
        file = run_dir / THRESHOLDS_FILE
        if not file.is_file():
            return None
        try:
            record = cls.model_validate_json(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValidationError) as err:
            raise TrainingError(
                f"cannot read {file}: {str(err).splitlines()[0]}",
                hint="choose them again: imgcls interpret RUN --save-thresholds (or delete the file)",
            ) from None
        return record.for_vocab(vocab, file)


def _pixels_text(n_in: int) -> str:
    grey = "; grey models: the ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B as one channel" if n_in == 1 else ""
    return f"RGB / 255{grey}, then (x - mean) / std per channel when normalize is set"
