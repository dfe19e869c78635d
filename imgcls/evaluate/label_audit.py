"""Suspect labels from a trained run: confident learning (cleanlab) on its validation probabilities.

The validation items were not trained on, so their predicted probabilities are out of sample, which is what
confident learning needs. Each item gets cleanlab's label quality score (lower: the model doubts the given label
more) and cleanlab's find_label_issues verdict (its estimate of which labels are wrong, from the confident joint).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgcls.errors import ImgclsError
from imgcls.evaluate.load import load_run
from imgcls.report.console import Console
from imgcls.spec.data import DataSpec
from imgcls.targets.category import LABEL_SCORE
from imgcls.train.evaluation import evaluate


@dataclass(frozen=True)
class Suspect:
    """One validation item: the given label, the model's suggestion, cleanlab's score and verdict."""

    index: int  # in the item list
    item: str  # relative to the data root
    given: str
    suggested: str
    score: float  # 0..1, lower = more suspect
    issue: bool  # flagged by cleanlab.filter.find_label_issues


@dataclass(frozen=True)
class LabelAudit:
    """Every evaluated validation item, most suspect first."""

    run: Path
    checkpoint: Path
    kind: str
    method: str
    suspects: list[Suspect]
    data: DataSpec  # the run's data section: the items ranked are its validation items

    @property
    def issues(self) -> list[Suspect]:
        return [s for s in self.suspects if s.issue]


def audit_labels(run_dir: Path, which: str = "best", console: Console | None = None) -> LabelAudit:
    """Rank the run's validation items by how much the model doubts their given labels."""
    loaded = load_run(run_dir, which)
    target = loaded.target
    if not target.probabilities:  # points and regression have no labels to doubt
        raise ImgclsError(
            f"suspect labels need a classifier; {run_dir} predicts {target.kind} targets",
            hint="--labels takes a run of one of: category, multi_category",
        )
    data = loaded.pipeline.data
    result = evaluate(loaded.model, loaded.pipeline.batches("valid"), loaded.runtime, console, "validation")
    if len(result) == 0:
        raise ImgclsError("no validation item could be evaluated", hint="check the split and the image files")
    probs = target.activation(result.outputs).numpy().astype(np.float64)
    try:
        scores, issues, given, suggested = target.label_quality(probs, result.targets.numpy(), loaded.pipeline.decision)
    except ValueError as err:  # cleanlab's checks on its input, e.g. too few items of a class
        raise ImgclsError(
            f"cleanlab cannot rank the labels of {run_dir}: {err}",
            hint="the validation set may be too small; train with a larger valid_pct",
        ) from None
    suspects = [
        Suspect(int(item), data.items.relative(int(item)), given[n], suggested[n], float(scores[n]), bool(issues[n]))
        for n, item in enumerate(result.indices.tolist())
    ]
    suspects.sort(key=lambda s: (s.score, s.index))
    return LabelAudit(run_dir, loaded.checkpoint.path, target.kind, LABEL_SCORE, suspects, loaded.spec.data)


__all__ = ["LabelAudit", "Suspect", "audit_labels"]
