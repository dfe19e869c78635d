"""Suspect labels: confident learning (cleanlab) on out-of-sample probabilities.

From a trained run, the out-of-sample items are its validation items: they were not trained on. With K-fold
cross-validation (`audit_labels_folds`) every item is: K short trainings of the spec's own recipe, each holding one
fold out, give every item a prediction from a model that never saw it. Each item gets cleanlab's label quality
score (lower: the model doubts the given label more) and cleanlab's find_label_issues verdict (its estimate of
which labels are wrong, from the confident joint).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgcls.data.datablock import DataBundle, build_data
from imgcls.data.splits import SplitIndices
from imgcls.errors import DataError, ImgclsError
from imgcls.evaluate.load import load_run
from imgcls.report.console import Console
from imgcls.spec.data import DataSpec
from imgcls.spec.schema import Spec
from imgcls.targets import Target
from imgcls.targets.base import Threshold
from imgcls.targets.category import LABEL_SCORE
from imgcls.train.builder import decision_threshold
from imgcls.train.evaluation import compute_metrics, evaluate
from imgcls.train.run import train

FOLD_CHECKPOINT = "last"  # the best one is chosen on the held-out fold's own labels: not out of sample


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

    run: Path  # the run, or the folder of the fold runs
    checkpoint: Path  # its checkpoint, or the fold runs' checkpoints as a pattern
    kind: str
    method: str
    suspects: list[Suspect]
    data: DataSpec  # the run's data section: the items ranked are its validation items (every item with folds)
    folds: int = 0  # K of the cross-validation; 0: one run's validation items
    fold_runs: list[Path] = field(default_factory=list)

    @property
    def issues(self) -> list[Suspect]:
        return [s for s in self.suspects if s.issue]

    @property
    def scope(self) -> str:
        """Which items were ranked, in words."""
        return f"items ({self.folds}-fold cross-validation)" if self.folds else "validation items"


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
    hint = "the validation set may be too small; train with a larger valid_pct"
    indices, thresh = result.indices.numpy(), loaded.pipeline.decision
    suspects = _ranked(target, data, probs, result.targets.numpy(), indices, thresh, hint)
    return LabelAudit(run_dir, loaded.checkpoint.path, target.kind, LABEL_SCORE, suspects, loaded.spec.data)


def _ranked(
    target: Target,
    data: DataBundle,
    probs: np.ndarray,
    targets: np.ndarray,
    indices: np.ndarray,
    thresh: Threshold,
    hint: str,
) -> list[Suspect]:
    """cleanlab's scores and verdicts for the items at `indices`, most suspect first."""
    try:
        scores, issues, given, suggested = target.label_quality(probs, targets, thresh)
    except ValueError as err:  # cleanlab's checks on its input, e.g. too few items of a class
        raise ImgclsError(f"cleanlab cannot rank the labels: {err}", hint=hint) from None
    suspects = [
        Suspect(int(item), data.items.relative(int(item)), given[n], suggested[n], float(scores[n]), bool(issues[n]))
        for n, item in enumerate(indices.tolist())
    ]
    suspects.sort(key=lambda s: (s.score, s.index))
    return suspects


# --- K-fold cross-validation -----------------------------------------------------------------------------------


def fold_numbers(strata: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold (0..k-1) per item, stratified: items shuffled by a generator seeded with `seed`, grouped by stratum,
    then dealt to the folds in turn, so each fold gets its share of every stratum and fold sizes differ by at
    most one."""
    order = np.random.default_rng(seed).permutation(len(strata))
    order = order[np.argsort(strata[order], kind="stable")]
    folds = np.empty(len(strata), dtype=np.int64)
    folds[order] = np.arange(len(strata)) % k
    return folds


def fold_spec(spec: Spec, fold: int, epochs: int | None) -> Spec:
    """The spec's recipe for fold `fold` (1-based): its own name suffixed, and with `epochs` every stage's
    `epochs` set to it (fine_tune's freeze_epochs are kept)."""
    train_spec = spec.train
    if epochs is not None:
        stages = [stage.model_copy(update={"epochs": epochs}) for stage in spec.train.stages]
        train_spec = spec.train.model_copy(update={"stages": stages})
    return spec.model_copy(update={"name": f"{spec.name or 'run'}-fold-{fold}", "train": train_spec})


@dataclass(frozen=True)
class FoldPlan:
    """Every item of the spec's split (training and validation), its fold, and the split each fold trains on."""

    data: DataBundle
    items: np.ndarray  # item indices, sorted
    folds: np.ndarray  # fold of each of `items`

    def split(self, fold: int) -> SplitIndices:
        return SplitIndices(self.items[self.folds != fold], self.items[self.folds == fold])


def plan_folds(spec: Spec, k: int, seed: int, quiet: bool = True) -> FoldPlan:
    """K stratified folds over all items; refused when a class would be missing from some fold's training set
    (its vocab would then differ from the others')."""
    if k < 2:
        raise ImgclsError(f"--folds must be at least 2, got {k}")
    data = build_data(spec.data, quiet)
    target = data.target
    items = np.sort(np.concatenate([data.split.train, data.split.valid]))
    if len(items) < 2 * k:
        raise DataError(f"{len(items)} items cannot make {k} folds", hint="use fewer folds")
    values = data.targets.values[items]
    folds = fold_numbers(target.strata(values), k, seed)
    for fold in range(k):
        absent = [name for name, count in target.class_counts(values[folds != fold]).items() if count == 0]
        if absent:
            raise DataError(
                f"with {k} folds, fold {fold + 1}'s training items have no '{absent[0]}' ({len(absent)} class(es) "
                "missing): its vocab would differ from the other folds'",
                hint="use fewer folds, or collect more items of the rarest classes",
            )
    return FoldPlan(data, items, folds)


def _fold_probabilities(run_dir: Path, console: Console | None) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """The held-out fold's item indices and probabilities from the fold run's last checkpoint, and its metrics."""
    loaded = load_run(run_dir, FOLD_CHECKPOINT)
    pipeline = loaded.pipeline
    result = evaluate(loaded.model, pipeline.batches("valid"), loaded.runtime, console, "held-out fold")
    metrics = compute_metrics(result, pipeline.loss, pipeline.metrics) if len(result) else {}
    probs = loaded.target.activation(result.outputs).numpy().astype(np.float64)
    return result.indices.numpy(), probs, metrics


def audit_labels_folds(
    spec: Spec, k: int, folder: Path, epochs: int | None = None, console: Console | None = None
) -> LabelAudit:
    """Rank every item of the spec by how much models that never saw it doubt its label: K trainings of the spec's
    recipe into folder/fold-1..K, each with one stratified fold (drawn with the spec's seed) as its validation
    set, and each fold's probabilities from its run's last checkpoint."""
    display = console or Console(quiet=True, enabled=False)
    plan = plan_folds(spec, k, spec.seed, display.quiet)
    target = plan.data.target
    n_out = target.n_out
    probs = np.full((len(plan.data.items), n_out), np.nan)
    runs = []
    for fold in range(k):
        split = plan.split(fold)
        run_dir = folder / f"fold-{fold + 1}"
        display.info(
            f"fold {fold + 1}/{k}: training on {len(split.train)} items, holding out {len(split.valid)} -> {run_dir}"
        )
        start = time.perf_counter()
        train(fold_spec(spec, fold + 1, epochs), run_dir, quiet=display.quiet, console=display, split=split)
        indices, fold_probs, metrics = _fold_probabilities(run_dir, console)
        probs[indices] = fold_probs
        runs.append(run_dir)
        scores = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        display.info(
            f"fold {fold + 1}/{k} done in {time.perf_counter() - start:.0f} s: {len(indices)} held-out items, "
            f"{scores} ({FOLD_CHECKPOINT} checkpoint, against the given labels)"
        )
    predicted = np.flatnonzero(~np.isnan(probs[:, 0]))
    if len(predicted) < len(plan.items):
        display.warn(f"{len(plan.items) - len(predicted)} item(s) could not be predicted; they are not ranked")
    targets = plan.data.targets.values[predicted]
    thresh = decision_threshold(spec)
    hint = "some class may have too few items; use fewer folds or more items per class"
    suspects = _ranked(target, plan.data, probs[predicted], targets, predicted, thresh, hint)
    pattern = folder / "fold-*" / "checkpoints" / f"{FOLD_CHECKPOINT}.safetensors"
    return LabelAudit(folder, pattern, target.kind, LABEL_SCORE, suspects, spec.data, k, runs)


__all__ = [
    "FoldPlan",
    "LabelAudit",
    "Suspect",
    "audit_labels",
    "audit_labels_folds",
    "fold_numbers",
    "fold_spec",
    "plan_folds",
]
