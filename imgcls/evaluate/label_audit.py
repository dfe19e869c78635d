"""Suspect labels from a trained run: confident learning (cleanlab) on its validation probabilities.

The validation items were not trained on, so their predicted probabilities are out of sample, which is what
confident learning needs. Each item gets cleanlab's label quality score (lower: the model doubts the given label
more) and cleanlab's find_label_issues verdict (its estimate of which labels are wrong, from the confident joint).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgcls.errors import ImgclsError
from imgcls.evaluate.load import LoadedRun, load_run, valid_loader, validation_data
from imgcls.evaluate.passes import geometry_pass
from imgcls.report.console import Console
from imgcls.spec.data import DataSpec

SCORE_METHOD = "self_confidence"  # cleanlab's default: the predicted probability of the given label


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


# (probabilities (N, C), targets, vocab, threshold) -> (scores (N,), issues (N,) bool, given, suggested)
Scorer = Callable[[np.ndarray, np.ndarray, list[str], float], tuple[np.ndarray, np.ndarray, list[str], list[str]]]


def _single_label(
    probs: np.ndarray, targets: np.ndarray, vocab: list[str], _: float
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = targets.astype(np.int64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 only within ~1e-7
    scores = get_label_quality_scores(labels, probs, method=SCORE_METHOD)
    issues = find_label_issues(labels, probs, n_jobs=1)
    given = [vocab[int(label)] for label in labels]
    suggested = [vocab[int(best)] for best in probs.argmax(axis=1)]
    return np.asarray(scores, dtype=np.float64), np.asarray(issues, dtype=bool), given, suggested


def _multi_label(
    probs: np.ndarray, targets: np.ndarray, vocab: list[str], thresh: float
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    from cleanlab.multilabel_classification import get_label_quality_scores
    from cleanlab.multilabel_classification.filter import find_label_issues

    labels = [np.flatnonzero(row > 0.5).tolist() for row in targets]
    scores = get_label_quality_scores(labels, probs, method=SCORE_METHOD)
    issues = find_label_issues(labels, probs, n_jobs=1)

    def words(on: np.ndarray) -> str:
        return " ".join(name for name, flag in zip(vocab, on, strict=True) if flag) or "-"

    given = [words(row > 0.5) for row in targets]
    suggested = [words(row > thresh) for row in probs]
    return np.asarray(scores, dtype=np.float64), np.asarray(issues, dtype=bool), given, suggested


# Per target kind: how cleanlab scores its labels (points and regression have no labels to doubt).
_SCORERS: dict[str, Scorer] = {"category": _single_label, "multi_category": _multi_label}


def _scorer(loaded: LoadedRun) -> Scorer:
    kind = loaded.info.kind
    if kind not in _SCORERS:
        raise ImgclsError(
            f"suspect labels need a classifier; {loaded.run_dir} predicts {kind} targets",
            hint=f"--labels takes a run of one of: {', '.join(_SCORERS)}",
        )
    return _SCORERS[kind]


def audit_labels(run_dir: Path, which: str = "best", console: Console | None = None) -> LabelAudit:
    """Rank the run's validation items by how much the model doubts their given labels."""
    loaded = load_run(run_dir, which)
    scorer = _scorer(loaded)
    data = validation_data(loaded)
    result = geometry_pass(loaded.model, valid_loader(loaded, data), loaded.runtime, console, "validation")
    if len(result) == 0:
        raise ImgclsError("no validation item could be evaluated", hint="check the split and the image files")
    probs = loaded.loss.activation(result.outputs).numpy().astype(np.float64)
    try:
        scores, issues, given, suggested = scorer(probs, result.targets.numpy(), loaded.info.vocab, loaded.thresh)
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
    return LabelAudit(run_dir, loaded.checkpoint.path, loaded.info.kind, SCORE_METHOD, suspects, loaded.spec.data)


__all__ = ["SCORE_METHOD", "LabelAudit", "Suspect", "audit_labels"]
