"""The `tune:` section: a search space over the spec's own dotted paths, the metric, the pruner, the storage."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from imgcls.registry import did_you_mean
from imgcls.spec.base import PositiveFloat, PositiveInt, StrictModel, named

NonNegativeInt = Annotated[int, Field(ge=0)]

# --- search dimensions: `{log_uniform: [1e-4, 1e-2]}`, `{choice: [32, 64]}`, ... ------------------------------

_RANGES = ("uniform", "log_uniform", "int_uniform")
_KINDS = (*_RANGES, "choice")
_FORMS = "{uniform: [low, high]}, {log_uniform: [low, high]}, {int_uniform: [low, high]} or {choice: [a, b, ...]}"


def _dimension(value: Any) -> Any:
    """`{log_uniform: [a, b], ...}` -> `{kind: log_uniform, low: a, high: b, ...}` (and choice -> choices)."""
    if not isinstance(value, dict):
        raise ValueError(f"a search dimension is one of {_FORMS}; got {value!r}")
    kinds = [key for key in value if key in _KINDS]
    if not kinds:
        unknown = str(next(iter(value), ""))
        raise ValueError(f"unknown kind '{unknown}'{did_you_mean(unknown, list(_KINDS))}; a dimension is {_FORMS}")
    if len(kinds) > 1:
        raise ValueError(f"a dimension names one kind, got {' and '.join(kinds)}")
    kind = kinds[0]
    rest = {k: v for k, v in value.items() if k != kind}
    bounds = value[kind]
    if kind == "choice":
        if not isinstance(bounds, list) or not bounds:
            raise ValueError(f"choice takes a non-empty list of values, got {bounds!r}")
        return {"kind": kind, "choices": bounds, **rest}
    if not (isinstance(bounds, list) and len(bounds) == 2):
        raise ValueError(f"{kind} takes [low, high], got {bounds!r}")
    return {"kind": kind, "low": bounds[0], "high": bounds[1], **rest}


class _Range(StrictModel):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if not self.low < self.high:
            raise ValueError(f"[low, high] needs low < high, got [{self.low}, {self.high}]")
        return self


class UniformSpec(_Range):
    """A float drawn uniformly from [low, high]."""

    kind: Literal["uniform"]


class LogUniformSpec(_Range):
    """A float drawn uniformly in log space from [low, high] (learning rates, weight decay)."""

    kind: Literal["log_uniform"]
    low: PositiveFloat
    high: PositiveFloat


class IntUniformSpec(_Range):
    """An integer from low to high inclusive, in steps of `step` (or uniformly in log space with log: true)."""

    kind: Literal["int_uniform"]
    low: int
    high: int
    step: PositiveInt = 1
    log: bool = False

    @model_validator(mode="after")
    def _log_steps(self) -> IntUniformSpec:
        if self.log and (self.step != 1 or self.low < 1):
            raise ValueError("int_uniform with log: true needs step 1 and low >= 1")
        return self


class ChoiceSpec(StrictModel):
    """One of a list of values (numbers, strings, booleans or null: what Optuna can store)."""

    kind: Literal["choice"]
    choices: Annotated[list[bool | int | float | str | None], Field(min_length=1)]


Dimension = Annotated[
    Annotated[UniformSpec | LogUniformSpec | IntUniformSpec | ChoiceSpec, Field(discriminator="kind")],
    BeforeValidator(_dimension),
]

# --- pruners: fed the metric after every epoch ---------------------------------------------------------------


class MedianPrunerSpec(StrictModel):
    """Prune a trial whose metric is worse than the median of earlier trials at the same epoch."""

    kind: Literal["median"]
    # Trials finished before any pruning happens.
    n_startup_trials: NonNegativeInt = 5
    # Epochs of each trial before it may be pruned.
    n_warmup_steps: NonNegativeInt = 0
    interval_steps: PositiveInt = 1
    n_min_trials: PositiveInt = 1


class SuccessiveHalvingPrunerSpec(StrictModel):
    """Asynchronous successive halving: keep the top 1/reduction_factor of trials at each rung of epochs."""

    kind: Literal["successive_halving"]
    # Epochs before the first rung; auto: estimated from the first trials, as Optuna does.
    min_resource: Literal["auto"] | PositiveInt = "auto"
    reduction_factor: Annotated[int, Field(ge=2)] = 4
    min_early_stopping_rate: NonNegativeInt = 0
    bootstrap_count: NonNegativeInt = 0


class NoPrunerSpec(StrictModel):
    """Every trial trains to its last epoch."""

    kind: Literal["none"]


Pruner = Annotated[
    Annotated[MedianPrunerSpec | SuccessiveHalvingPrunerSpec | NoPrunerSpec, Field(discriminator="kind")],
    BeforeValidator(lambda value: named(value, "kind")),
]


class TuneSpec(StrictModel):
    """`imgcls tune`: trials of the spec with values from `space`, searched by Optuna's TPE sampler."""

    # Dotted paths of the spec (train.stages.0.lr_max, data.bs, augment.min_scale) -> a dimension.
    space: Annotated[dict[str, Dimension], Field(min_length=1)]
    # A column of metrics.csv: valid_loss, train_loss or one of train.metrics.
    metric: str = "valid_loss"
    # auto: minimize losses, errors, rmse and mae; maximize everything else.
    direction: Literal["auto", "minimize", "maximize"] = "auto"
    # The trial's value: the metric at its last epoch, or its best over the epochs.
    value: Literal["last", "best"] = "last"
    # Trials in total, over every process that shares the storage (complete, pruned, failed and running).
    n_trials: PositiveInt = 20
    pruner: Pruner = Field(default_factory=lambda: MedianPrunerSpec(kind="median"))
    # Unset: an Optuna journal file, optuna.journal, in the study folder. A URL (postgresql://, mysql://,
    # sqlite:///) is an RDB storage several machines can share; any other value is a journal file's path.
    storage: str | None = None
    # Unset: the spec's name.
    study_name: str | None = None
    # Seed of the TPE sampler; unset: the spec's seed.
    seed: int | None = None
    # Trials drawn at random before TPE starts modelling the results (Optuna's default: 10).
    n_startup_trials: NonNegativeInt = 10
