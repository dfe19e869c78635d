"""The `model:`, `train:`, `callbacks:` and `runtime:` sections."""

from __future__ import annotations

import warnings
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from imgcls.spec.base import (
    Epochs,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Probability,
    Size,
    StrictModel,
    named,
)

# --- model ----------------------------------------------------------------------------------------------


class HeadSpec(StrictModel):
    """fastai's create_head: [concat pool] -> flatten -> (BN, dropout, linear, ReLU)* -> BN, dropout, linear."""

    concat_pool: bool = True
    # Hidden layer widths; unset = [512], fastai's default.
    lin_ftrs: list[PositiveInt] | None = None
    # Dropout of the last layer; earlier layers get ps/2.
    ps: Probability = 0.5
    first_bn: bool = True
    bn_final: bool = False


class ModelSpec(StrictModel):
    """Any timm architecture (or one of imgcls's xresnet names) with a fastai-style head."""

    arch: str = "resnet34"
    # True: timm hub weights (needs the internet once). A local file in `weights` wins over the hub.
    pretrained: bool = False
    weights: str | None = None
    # Input channels: 3 (RGB) or 1 (batches are converted to grey on the device).
    n_in: Literal[1, 3] = 3
    # Squash outputs into [low, high] with a sigmoid (points: [-1, 1]).
    y_range: tuple[float, float] | None = None
    head: HeadSpec = Field(default_factory=HeadSpec)
    # Passed to timm.create_model, e.g. {drop_path_rate: 0.1}.
    kwargs: dict[str, Any] = Field(default_factory=dict)
    sync_bn: bool = False

    @model_validator(mode="after")
    def _range_order(self) -> ModelSpec:
        if self.y_range is not None and self.y_range[0] >= self.y_range[1]:
            raise ValueError(f"y_range must be [low, high] with low < high, got {list(self.y_range)}")
        return self


# --- schedules (one per stage) --------------------------------------------------------------------------


def _lr_range(value: Any) -> Any:
    """A learning rate or a [low, high] range spread geometrically over the parameter groups."""
    if isinstance(value, list | tuple):
        return tuple(value)
    return value


LearningRate = Annotated[PositiveFloat | tuple[PositiveFloat, PositiveFloat], BeforeValidator(_lr_range)]


class StageBase(StrictModel):
    # Final image size for this stage (progressive resizing); unset = augment.size.
    size: Size | None = None
    # Batch size for this stage; unset = data.bs.
    bs: PositiveInt | None = None
    epochs: Epochs = 1
    # Weight decay for this stage; unset = train.wd.
    wd: NonNegativeFloat | None = None


class FitOneCycleStage(StageBase):
    """Cosine warm-up from lr_max/div to lr_max over pct_start, then cosine down to lr_max/div_final."""

    schedule: Literal["fit_one_cycle"]
    lr_max: LearningRate = 1e-3
    div: PositiveFloat = 25.0
    div_final: PositiveFloat = 1e5
    pct_start: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95)
    # Train only the head (batch-norm layers of the body keep training, as in fastai).
    freeze: bool = False


class FineTuneStage(StageBase):
    """freeze_epochs of one-cycle on the head (pct_start 0.99), then all groups at base_lr/2 spread by lr_mult."""

    schedule: Literal["fine_tune"]
    base_lr: PositiveFloat = 2e-3
    freeze_epochs: Annotated[int, Field(ge=0, le=100_000)] = 1
    lr_mult: PositiveFloat = 100.0
    pct_start: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    div: PositiveFloat = 5.0
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95)


class FitStage(StageBase):
    """A constant learning rate (momentum fixed at moms[0])."""

    schedule: Literal["fit"]
    lr: LearningRate = 1e-3
    moms: tuple[float, float, float] = (0.9, 0.9, 0.9)
    freeze: bool = False


Stage = Annotated[FitOneCycleStage | FineTuneStage | FitStage, Field(discriminator="schedule")]


# --- losses and metrics -----------------------------------------------------------------------------------


LossWeights = Literal["auto"] | Annotated[list[PositiveFloat], Field(min_length=1)]


class LossSpec(StrictModel):
    """auto picks from the target block: cross_entropy, bce_with_logits or mse."""

    name: Literal["auto", "cross_entropy", "label_smoothing_cross_entropy", "bce_with_logits", "focal", "mse", "l1"] = (
        "auto"
    )
    eps: Probability = 0.1
    # Single-label: one weight per class (vocab order); auto = N / (C * n_c) from the training counts.
    class_weights: LossWeights | None = None
    # Multi-label: weight of each label's positive term; auto = negatives / positives in the training set.
    pos_weight: LossWeights | None = None
    # focal: each term is scaled by (1 - p_t)^gamma; gamma 0 is the plain (weighted) loss.
    gamma: NonNegativeFloat = 2.0
    # focal, multi-label: alpha on the positive terms and 1 - alpha on the negative ones; unset = 1 and 1.
    alpha: Probability | None = None

    @model_validator(mode="after")
    def _focal_only(self) -> LossSpec:
        if self.alpha is not None and self.name != "focal":
            raise ValueError(f"alpha weights the focal loss; the loss is '{self.name}' (set name: focal)")
        return self


class AccuracySpec(StrictModel):
    """accuracy, error_rate, or balanced_accuracy (the mean recall over the classes present)."""

    name: Literal["accuracy", "error_rate", "balanced_accuracy"]


class TopKSpec(StrictModel):
    name: Literal["top_k_accuracy"]
    k: PositiveInt = 5


class AccuracyMultiSpec(StrictModel):
    name: Literal["accuracy_multi"]
    thresh: Probability = 0.5


class F1Spec(StrictModel):
    """Macro F1 over classes (single-label) or labels at `thresh` (multi-label)."""

    name: Literal["f1_macro"]
    thresh: Probability = 0.5


class RegressionMetricSpec(StrictModel):
    name: Literal["rmse", "mae"]


Metric = Annotated[
    Annotated[
        AccuracySpec | TopKSpec | AccuracyMultiSpec | F1Spec | RegressionMetricSpec,
        Field(discriminator="name"),
    ],
    BeforeValidator(named),
]


class TrainSpec(StrictModel):
    """Stages trained in turn on one model (progressive resizing), the optimizer, loss and metrics."""

    stages: Annotated[list[Stage], Field(min_length=1)]
    optimizer: Literal["adam", "sgd"] = "adam"
    # fastai's Adam: beta1 follows the momentum schedule, beta2 = sqr_mom, eps 1e-5, decoupled wd 0.01.
    wd: NonNegativeFloat = 0.01
    sqr_mom: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.99
    eps: PositiveFloat = 1e-5
    nesterov: bool = False
    # False: no weight decay on batch-norm and bias parameters (fastai's wd_bn_bias=False).
    wd_bn_bias: bool = False
    # True: frozen groups keep training their batch-norm layers (fastai's train_bn).
    train_bn: bool = True
    loss: Annotated[LossSpec, BeforeValidator(named)] = Field(default_factory=LossSpec)
    metrics: list[Metric] = Field(default_factory=list)
    # Decision threshold for multi-label predictions; unset = accuracy_multi's thresh, else 0.5.
    thresh: Probability | None = None


# --- callbacks --------------------------------------------------------------------------------------------


class MixUpSpec(StrictModel):
    name: Literal["mixup"]
    alpha: PositiveFloat = 0.4


class CutMixSpec(StrictModel):
    name: Literal["cutmix"]
    alpha: PositiveFloat = 1.0


Mode = Literal["auto", "min", "max"]


class MonitorSpec(StrictModel):
    """A metrics.csv column to watch; mode auto: min for losses, errors, rmse and mae, max otherwise."""

    monitor: str = "valid_loss"
    mode: Mode = "auto"
    min_delta: NonNegativeFloat = 0.0


class SaveBestSpec(MonitorSpec):
    """Write checkpoints/best.safetensors whenever `monitor` improves."""

    name: Literal["save_best"]


class EarlyStoppingSpec(MonitorSpec):
    """End the phase after `patience` epochs without improvement."""

    name: Literal["early_stopping"]
    patience: PositiveInt = 1


class GradientAccumulationSpec(StrictModel):
    """Step the optimizer once `n_acc` samples (not batches) have been seen, as fastai counts."""

    name: Literal["gradient_accumulation"]
    n_acc: PositiveInt = 32


class GradientClipSpec(StrictModel):
    name: Literal["gradient_clip"]
    max_norm: PositiveFloat = 1.0
    norm_type: PositiveFloat = 2.0


with warnings.catch_warnings():
    # `validate` is the spec's key; as a field it shadows pydantic's deprecated BaseModel.validate classmethod,
    # which imgcls never calls, and pydantic warns about that once, when the class is made.
    warnings.filterwarnings("ignore", message='Field name "validate"', category=UserWarning)

    class EMASpec(StrictModel):
        """An exponential moving average of the weights (timm's ModelEmaV3): after every `every`-th optimizer step,
        ema = d * ema + (1 - d) * weights, and buffers (batch-norm statistics) are copied. The first update copies
        the weights (d = 0); then d = decay, or with warmup d = min(decay, 1 - k^-warmup_power) at the k-th update."""

        name: Literal["ema"]
        decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9998
        warmup: bool = False
        # timm's default 2/3; 1 makes the warm-up average every update so far equally.
        warmup_power: PositiveFloat = 2 / 3
        every: PositiveInt = 1
        # ema: metrics, best/last and export use the averaged weights; model: the trained ones; both: the trained
        # ones, with the averaged weights' columns added as ema_valid_loss, ema_<metric>.
        validate: Literal["ema", "model", "both"] = "ema"  # type: ignore[assignment]  # see the filter above


class TensorBoardSpec(StrictModel):
    name: Literal["tensorboard"]
    # Relative to the run folder.
    log_dir: str = "tensorboard"


class MlflowSpec(StrictModel):
    """Log the spec, every epoch's metrics and the run folder's files to an MLflow tracking store."""

    name: Literal["mlflow"]
    # Unset: $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db in the current folder (no server needed).
    tracking_uri: str | None = None
    experiment: str = "imgcls"
    # Unset: the spec's name.
    run_name: str | None = None
    # Unset: MLflow's default; for a local sqlite store, an mlartifacts/ folder next to the database file.
    artifact_location: str | None = None
    log_checkpoints: bool = False


class WandbSpec(StrictModel):
    """Log the spec, every epoch's metrics and the run folder's files to Weights & Biases."""

    name: Literal["wandb"]
    project: str = "imgcls"
    entity: str | None = None
    # Unset: $WANDB_MODE, else online. offline writes a run folder to sync later (`wandb sync`).
    mode: Literal["online", "offline", "disabled"] | None = None
    # Where wandb writes its wandb/ folder; unset: the run folder.
    dir: str | None = None
    # Unset: the spec's name.
    run_name: str | None = None
    group: str | None = None
    tags: list[str] = Field(default_factory=list)
    log_checkpoints: bool = False


Callback = Annotated[
    Annotated[
        MixUpSpec
        | CutMixSpec
        | SaveBestSpec
        | EarlyStoppingSpec
        | GradientAccumulationSpec
        | GradientClipSpec
        | EMASpec
        | TensorBoardSpec
        | MlflowSpec
        | WandbSpec,
        Field(discriminator="name"),
    ],
    BeforeValidator(named),
]


# --- runtime ----------------------------------------------------------------------------------------------


class RuntimeSpec(StrictModel):
    """Where and how fast: each option falls back cleanly on the CPU."""

    device: str = "auto"
    # auto: bf16 on CUDA GPUs that support it, fp16 with a grad scaler on older ones; on the CPU bf16 where it has
    # AMX or AVX512-BF16 (1.0-2.6x fp32's training step on a 2-core Xeon), else fp32. bf16 asked for on a CPU
    # without them is fp32, with a note.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # auto: on CUDA, and on the CPU when training in bf16.
    channels_last: Literal["auto"] | bool = "auto"
    compile: bool = False
    # Intra-op threads of each training process: auto = its share of the cores it may use (os.sched_getaffinity),
    # fewer while other processes keep some of them busy (one process on the CPU); a number fixes the count.
    threads: Literal["auto"] | PositiveInt = "auto"
    # Training batches between progress-bar refreshes (each refresh waits for the device).
    log_every: PositiveInt = 10
    # Minutes between checkpoints/last.safetensors written in the middle of an epoch (0: at epoch ends only):
    # a kill loses at most this much training. Each write takes about as long as saving the weights twice.
    checkpoint_every: NonNegativeFloat = 5.0

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got '{device}'")
        return device
