"""Shared pieces of the spec models."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class StrictModel(BaseModel):
    """A spec section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _size_pair(value: Any) -> Any:
    """`224` -> (224, 224); `[240, 320]` stays (height, width), fastai's order."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    return value


PositiveInt = Annotated[int, Field(gt=0)]
# Sides up to 8192 px: an 8192 x 8192 RGB image is 201 MB as uint8, already far beyond any batch that trains.
Side = Annotated[int, Field(gt=0, le=8192)]
# A size in pixels: one int for a square, or [height, width].
Size = Annotated[tuple[Side, Side], BeforeValidator(_size_pair)]
# Epochs of a phase: a typo such as 1e23 is refused (100,000 epochs is more than any schedule needs).
Epochs = Annotated[int, Field(gt=0, le=100_000)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]


def named(value: Any, key: str = "name") -> Any:
    """Let a bare string stand for a mapping with only its `key`: `accuracy` == `{name: accuracy}`."""
    if isinstance(value, str):
        return {key: value}
    return value
