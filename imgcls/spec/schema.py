"""The whole experiment spec: one validated, immutable object per YAML file."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from imgcls.spec.base import StrictModel
from imgcls.spec.data import AugmentSpec, DataSpec
from imgcls.spec.train import Callback, EMASpec, LossSpec, ModelSpec, RuntimeSpec, TrainSpec
from imgcls.spec.tune import TuneSpec
from imgcls.targets import TARGETS, Target


class Spec(StrictModel):
    """An experiment: data -> augment -> model -> train, plus callbacks and runtime options."""

    # Run folder name under runs/; unset = the spec file's stem.
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        # The name becomes runs/<name>: a path in it would put the run somewhere else.
        if name is not None and (not name or name in (".", "..") or "/" in name or "\\" in name):
            raise ValueError(f"name must be a plain folder name (no '/', not '.' or '..'), got '{name}'; use --out DIR")
        return name

    seed: int = 42
    data: DataSpec
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec
    callbacks: list[Callback] = Field(default_factory=list)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    # Read by `imgcls tune` only; never written out (spec.yaml, checkpoints), so a trial's spec has none.
    tune: TuneSpec | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _fits_target(self) -> Spec:
        target = self.data.target
        block = TARGETS.get(target)
        for metric in self.train.metrics:
            if metric.name not in block.metrics:
                valid = ", ".join(sorted(block.metrics))
                raise ValueError(f"metric '{metric.name}' does not apply to {target} targets; use {valid}")
        problem = _loss_problem(self.train.loss, block, target) or _callback_problem(self.callbacks)
        if problem:
            raise ValueError(problem)
        if self.data.sampler == "balanced" and not block.can_balance:
            raise ValueError(
                f"data.sampler: balanced draws the classes of single-label (category) targets equally often; "
                f"{target} targets cannot be balanced that way (use data.sampler: random)"
            )
        return self

    @property
    def final_size(self) -> tuple[int, int] | None:
        """The size batches reach the model at, before any stage overrides it."""
        if self.augment.size is not None:
            return self.augment.size
        return self.data.item_tfm.size if self.data.item_tfm is not None else None


def _loss_problem(loss: LossSpec, block: type[Target], target: str) -> str | None:
    """Why `loss` does not fit the target kind (its name or an option it does not take), or None."""
    if loss.name not in ("auto", *block.losses):
        valid = ", ".join(sorted(("auto", *block.losses)))
        return f"loss '{loss.name}' does not apply to {target} targets; use {valid}"
    for option in ("class_weights", "pos_weight", "alpha"):
        if getattr(loss, option) is not None and option not in block.loss_options:
            takes = f"their losses take {', '.join(block.loss_options)}" if block.loss_options else "no weights"
            return f"train.loss.{option} does not apply to {target} targets; {takes}"
    return None


def _callback_problem(callbacks: list[Callback]) -> str | None:
    """Callbacks listed twice, or a monitor of ema_ columns that no ema callback writes."""
    names = [cb.name for cb in callbacks]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        return f"callbacks listed twice: {', '.join(duplicated)}"
    both = any(isinstance(cb, EMASpec) and cb.validate == "both" for cb in callbacks)
    for cb in callbacks:
        monitor = getattr(cb, "monitor", "")
        if monitor.startswith("ema_") and not both:
            return (
                f"callback {cb.name} monitors '{monitor}', a column that only {{name: ema, validate: both}} "
                "writes; add it, or monitor the plain column (with validate: ema it holds the averaged weights')"
            )
    return None
