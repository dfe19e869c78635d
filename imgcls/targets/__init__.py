"""Target blocks, keyed by their name in `data.blocks: [image, <target>]`."""

from __future__ import annotations

from typing import Any

from imgcls.registry import Registry
from imgcls.targets.base import EncodedTargets, Target
from imgcls.targets.category import Category
from imgcls.targets.multi_category import MultiCategory
from imgcls.targets.point import Point
from imgcls.targets.regression import Regression

TARGETS: Registry[type[Target]] = Registry(
    "target block",
    {
        "category": Category,
        "multi_category": MultiCategory,
        "point": Point,
        "regression": Regression,
    },
)


def target_from_record(raw: dict[str, Any]) -> Target:
    """The block a run's record describes ({kind, n_out, vocab, n_points})."""
    block = TARGETS.get(str(raw["kind"]))
    return block.from_record(int(raw["n_out"]), [str(v) for v in raw.get("vocab", [])], int(raw.get("n_points", 0)))


__all__ = ["TARGETS", "EncodedTargets", "Target", "target_from_record"]
