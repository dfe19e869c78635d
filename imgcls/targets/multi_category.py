"""Multi-label classification: any number of labels per image, one sigmoid each (fastai's MultiCategoryBlock)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from imgcls.errors import DataError
from imgcls.report.plots import image_grid, plot_threshold_sweep
from imgcls.targets.base import (
    EncodedTargets,
    Evaluated,
    ReportContext,
    ShownResult,
    Threshold,
    VocabTarget,
    grid_columns,
    label_vector,
    threshold_text,
    top_losses,
    unknown_labels_error,
)
from imgcls.targets.calibration import Calibration, binary_ece, fit_platt
from imgcls.targets.category import LABEL_SCORE

THRESHOLDS = np.linspace(0.05, 0.95, 29)  # the book's sweep
CHOSEN_BY = "per label, the threshold of linspace(0.05, 0.95, 29) with the highest validation F1"
_LOGIT_EPS = 1e-7  # keeps logit(p) finite for p = 0 or 1


def multilabel_report(probs: np.ndarray, targets: np.ndarray, vocab: Sequence[str], thresh: Threshold) -> pd.DataFrame:
    """Per label at `thresh` (probabilities > thresh; one value, or one per label): precision, recall, F1,
    accuracy (share of items decided right), support (items with the label) and how many were predicted to have it."""
    predicted = probs > label_vector(thresh, probs.shape[1])
    actual = targets > 0.5
    true_pos = (predicted & actual).sum(axis=0).astype(float)
    n_predicted = predicted.sum(axis=0).astype(float)
    support = actual.sum(axis=0).astype(float)
    precision = np.divide(true_pos, n_predicted, out=np.zeros_like(true_pos), where=n_predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_pos), where=denominator > 0)
    accuracy = (predicted == actual).mean(axis=0)
    columns = {
        "label": list(vocab),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": accuracy,
        "support": support.astype(int),
        "predicted": n_predicted.astype(int),
    }
    report: pd.DataFrame = pd.DataFrame(columns)
    return report


def threshold_sweep(probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """accuracy_multi (share of (item, label) cells decided right) at each threshold on the probabilities."""
    actual = targets > 0.5
    return np.array([float(((probs > t) == actual).mean()) for t in thresholds])


def best_label_thresholds(
    probs: np.ndarray, targets: np.ndarray, fallback: Threshold, thresholds: np.ndarray = THRESHOLDS
) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the threshold of the sweep where that label's F1 is highest (ties: the one nearest the fallback,
    so that a flat stretch keeps the run's own); a label no validation item has keeps the fallback. F1, not
    accuracy, because a rare label's accuracy is best when it is never predicted. Returns the thresholds and
    each label's F1 there."""
    actual = targets > 0.5
    predicted = probs[:, None, :] > thresholds[None, :, None]  # (items, thresholds, labels)
    true_pos = (predicted & actual[:, None, :]).sum(axis=0)
    denominator = predicted.sum(axis=0) + actual.sum(axis=0)[None, :]
    f1 = np.divide(2.0 * true_pos, denominator, out=np.zeros(true_pos.shape), where=denominator > 0)
    base = label_vector(fallback, probs.shape[1])
    chosen, scores = base.copy(), np.zeros(probs.shape[1])
    for label in range(probs.shape[1]):
        best = f1[:, label].max()
        if not actual[:, label].any():
            continue  # nothing to find: the fallback, F1 0
        candidates = np.flatnonzero(f1[:, label] >= best - 1e-12)
        pick = candidates[np.argmin(np.abs(thresholds[candidates] - base[label]))]
        chosen[label], scores[label] = float(thresholds[pick]), float(best)
    return chosen, scores


@dataclass(frozen=True, eq=False)
class MultiCategory(VocabTarget):
    """The vocab is the sorted set of labels of the training items; an image may have none."""

    kind = "multi_category"
    default_loss = "bce_with_logits"
    losses = ("bce_with_logits", "focal")
    metrics = ("accuracy_multi", "f1_macro")
    activation_name = "sigmoid"
    per_label_thresholds = True
    # Platt scaling per label (a, b), not a temperature per label: labels are often shifted as well as over- or
    # under-confident (a rare label's logits sit low), and a temperature keeps logit 0 at probability 0.5, so it
    # cannot correct a shift; b can. a > 0 keeps each label's ranking of the items.
    calibration_method = "platt"
    reliability_text = "probability of each (item, label)"
    loss_options = ("pos_weight", "alpha")
    weight_option = "pos_weight"
    # torch's BCEWithLogitsLoss(pos_weight=...) doc: negatives over positives balances each label's two terms.
    weight_rule = "(N - n_c) / n_c: N training items, n_c with label c (numerator at least 1)"

    @classmethod
    def encode(cls, labels: list[Any], train: np.ndarray, valid: np.ndarray) -> EncodedTargets:
        if any(isinstance(label, str) for label in labels):
            raise DataError(
                "labels are single strings, but the target block is 'multi_category'",
                hint="split them into lists: for a CSV column set data.labels.delimiter (e.g. ' ')",
            )
        lists = [[str(x) for x in label] for label in labels]
        vocab = sorted({x for i in train for x in lists[i]})
        lookup = {label: index for index, label in enumerate(vocab)}
        unknown = Counter(x for i in valid for x in lists[i] if x not in lookup)
        if unknown:
            raise unknown_labels_error(unknown, vocab)
        values = np.zeros((len(lists), len(vocab)), dtype=np.float32)
        for row, label_list in enumerate(lists):
            for label in label_list:
                if label in lookup:
                    values[row, lookup[label]] = 1.0
        return EncodedTargets(cls(tuple(vocab)), values)

    def class_counts(self, values: np.ndarray) -> dict[str, int]:
        sums = values.sum(axis=0) if len(values) else np.zeros(self.n_out)
        return {name: int(sums[i]) for i, name in enumerate(self.classes)}

    def loss_weights(self, values: np.ndarray) -> np.ndarray:
        positives = np.maximum(values.sum(axis=0).astype(np.float64), 1.0)
        # A label on every training item would get weight 0 and never learn its positives: keep it at 1 / n_c.
        negatives = np.maximum(len(values) - positives, 1.0)
        weights: np.ndarray = negatives / positives
        return weights

    def describe(self) -> str:
        return f"{self.n_out} labels (any number per image): {', '.join(self.classes)}"

    def label_text(self, value: np.ndarray | torch.Tensor) -> str:
        on = np.flatnonzero(np.asarray(value) > 0.5).tolist()
        return " ".join(self.classes[i] for i in on) or "(none)"

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(outputs.float())

    def inverse_activation(self, values: torch.Tensor) -> torch.Tensor:
        clamped = values.clamp(_LOGIT_EPS, 1 - _LOGIT_EPS)
        return torch.log(clamped / (1 - clamped))

    def decide(self, values: np.ndarray, thresh: Threshold) -> np.ndarray:
        return (values > label_vector(thresh, self.n_out)).astype(np.int64)

    def prediction_columns(self, top_k: int) -> list[str]:
        return ["labels", *(f"prob_{label}" for label in self.classes)]

    def prediction_row(
        self,
        values: np.ndarray,
        points: np.ndarray | None,
        size: tuple[int, int] | None,
        top_k: int,
        thresh: Threshold,
    ) -> dict[str, object]:
        cuts = label_vector(thresh, self.n_out)
        row: dict[str, object] = {
            "labels": " ".join(label for label, p, cut in zip(self.classes, values, cuts, strict=True) if p > cut)
        }
        row.update({f"prob_{label}": float(p) for label, p in zip(self.classes, values, strict=True)})
        return row

    def prediction_text(self, row: dict[str, Any]) -> str:
        return str(row.get("labels") or "") or "(no label above the threshold)"

    def withhold(
        self, row: dict[str, object], values: np.ndarray, min_confidence: float, thresh: Threshold
    ) -> dict[str, object]:
        """`labels` keeps the labels whose probability is above the decision threshold and at least
        `min_confidence` (so the higher of the two decides); the prob_<label> columns stay as they are."""
        cuts = label_vector(thresh, self.n_out)
        on = [
            label for label, p, cut in zip(self.classes, values, cuts, strict=True) if p > cut and p >= min_confidence
        ]
        return {**row, "labels": " ".join(on)}

    # --- calibration ---------------------------------------------------------------------------------------

    def _fit_map(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[Calibration, str]:
        # Platt's prior-corrected targets keep a and b finite even for a label the logits separate perfectly.
        a, b = fit_platt(outputs, targets)
        return Calibration("platt", a=a, b=b), ""

    def _nll(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return float(torch.nn.functional.binary_cross_entropy_with_logits(outputs.double(), targets.double()))

    def _ece(self, probs: torch.Tensor, targets: torch.Tensor) -> float:
        return binary_ece(probs, targets)

    def _reliability(self, probs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return probs.reshape(-1), (targets.reshape(-1) > 0.5).double()

    def strata(self, values: np.ndarray) -> np.ndarray:
        """The item's rarest label (n_out for an item without labels): a simple stand-in for iterative
        stratification that still spreads each rare label over the folds."""
        on = values > 0.5
        counts = on.sum(axis=0)
        # labels an item lacks count as more frequent than any it has, so argmin finds its rarest own label
        ranked = np.where(on, counts[None, :], len(values) + 1)
        rarest: np.ndarray = np.where(on.any(axis=1), ranked.argmin(axis=1), self.n_out).astype(np.int64)
        return rarest

    def label_quality(
        self, probs: np.ndarray, targets: np.ndarray, thresh: Threshold
    ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        from cleanlab.multilabel_classification import get_label_quality_scores
        from cleanlab.multilabel_classification.filter import find_label_issues

        labels = [np.flatnonzero(row > 0.5).tolist() for row in targets]
        scores = get_label_quality_scores(labels, probs, method=LABEL_SCORE)
        issues = find_label_issues(labels, probs, n_jobs=1)

        def words(on: np.ndarray) -> str:
            return " ".join(name for name, flag in zip(self.classes, on, strict=True) if flag) or "-"

        given = [words(row > 0.5) for row in targets]
        suggested = [words(row > label_vector(thresh, self.n_out)) for row in probs]
        return np.asarray(scores, dtype=np.float64), np.asarray(issues, dtype=bool), given, suggested

    # --- reports -----------------------------------------------------------------------------------------

    def _sweep(self, ctx: ReportContext) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        evaluated = ctx.evaluated
        probs = self.activation(evaluated.outputs).numpy()
        targets = evaluated.targets.numpy()
        accuracies = threshold_sweep(probs, targets)
        at_run = float(((probs > evaluated.thresh) == (targets > 0.5)).mean())
        return probs, targets, accuracies, at_run

    def _baselines(self, targets: np.ndarray) -> str:
        positive = float((targets > 0.5).mean())
        return f"all-negative {1 - positive:.4f}, all-positive {positive:.4f}"

    def choose_thresholds(self, evaluated: Evaluated) -> tuple[tuple[float, ...], str]:
        probs, targets = self.activation(evaluated.outputs).numpy(), evaluated.targets.numpy()
        chosen, _ = best_label_thresholds(probs, targets, evaluated.thresh)
        return tuple(round(float(v), 4) for v in chosen), CHOSEN_BY  # 4 digits: linspace's steps, no float noise

    def show_results(self, evaluated: Evaluated, positions: Sequence[int]) -> list[ShownResult]:
        probs = self.activation(evaluated.outputs).numpy()
        decision = evaluated.decision if evaluated.decision is not None else evaluated.thresh
        shown = []
        for p in positions:
            actual = self.label_text(evaluated.targets[p].numpy())
            predicted = self.label_text(self.decide(probs[p], decision))
            shown.append(ShownResult(f"actual {actual}\npredicted {predicted}", actual == predicted))
        return shown

    def training_report(self, ctx: ReportContext) -> tuple[list[str], list[str]]:
        _, targets, accuracies, at_run = self._sweep(ctx)
        best = int(accuracies.argmax())
        thresh = ctx.evaluated.thresh
        lines = [f"accuracy_multi {at_run:.4f} at the run's threshold {thresh:.2f} ({self._baselines(targets)})"]
        if accuracies[best] > at_run + 1e-9:
            lines.append(
                f"best threshold {THRESHOLDS[best]:.3f}: accuracy_multi {accuracies[best]:.4f} "
                f"({accuracies[best] - at_run:+.4f}); `imgcls interpret RUN --save-thresholds` chooses one per label"
            )
        else:
            lines.append(f"no threshold of the sweep does better than the run's {thresh:.2f}")
        return lines, []

    def interpret(self, ctx: ReportContext) -> list[str]:
        console, thresh = ctx.console, ctx.evaluated.thresh
        probs, targets, accuracies, at_run = self._sweep(ctx)
        sweep = pd.DataFrame({"threshold": THRESHOLDS, "accuracy_multi": accuracies})
        sweep.to_csv(ctx.folder / "threshold_sweep.csv", index=False, float_format="%.4f")
        plot_threshold_sweep(THRESHOLDS, accuracies, thresh, ctx.folder / "threshold_sweep.png")
        best = int(accuracies.argmax())
        console.info(f"accuracy_multi at the run's threshold {thresh:.2f}: {at_run:.4f}")
        console.info(f"baselines: {self._baselines(targets)}")
        swept = f"{THRESHOLDS[0]:.2f}..{THRESHOLDS[-1]:.2f} in {len(THRESHOLDS)} steps"
        if accuracies[best] > at_run + 1e-9:
            console.info(
                f"best threshold {THRESHOLDS[best]:.3f}: accuracy_multi {accuracies[best]:.4f} "
                f"({accuracies[best] - at_run:+.4f}; swept {swept}); use it with "
                f"`imgcls predict --thresh {THRESHOLDS[best]:.3f}` or train.thresh"
            )
        else:
            console.info(
                f"no threshold does better than the run's (swept {swept}; best {THRESHOLDS[best]:.3f}: "
                f"{accuracies[best]:.4f})"
            )
        self._per_label(ctx, probs, targets)
        self._top_losses(ctx, probs)
        return ["per_label.csv", "threshold_sweep.csv/.png", "top_losses.csv/.png", *self._calibration_report(ctx)]

    def _per_label(self, ctx: ReportContext, probs: np.ndarray, targets: np.ndarray) -> None:
        """The per-label table at the run's threshold, with each label's best threshold by F1 beside it."""
        console, evaluated = ctx.console, ctx.evaluated
        report = multilabel_report(probs, targets, self.classes, evaluated.thresh)
        chosen, best_f1 = best_label_thresholds(probs, targets, evaluated.thresh)
        report["best_threshold"], report["f1_at_best"] = chosen, best_f1
        report.to_csv(ctx.folder / "per_label.csv", index=False, float_format="%.4f")
        console.info(f"per label at {evaluated.thresh:.2f}, and the threshold where each label's F1 is best:")
        console.info(
            f"{'label':<20}{'precision':>10}{'recall':>10}{'f1':>10}{'accuracy':>10}{'support':>9}"
            f"{'best at':>9}{'f1 there':>10}"
        )
        for _, row in report.iterrows():
            console.info(
                f"{row['label']!s:<20}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}"
                f"{row['accuracy']:>10.4f}{row['support']:>9d}{row['best_threshold']:>9.3f}{row['f1_at_best']:>10.4f}"
            )
        at_chosen = float(((probs > chosen) == (targets > 0.5)).mean())
        console.info(
            f"with those per-label thresholds: accuracy_multi {at_chosen:.4f}, macro F1 {best_f1.mean():.4f} "
            f"(at {evaluated.thresh:.2f}: {float(report['f1'].mean()):.4f}); save them for predict and export "
            "with --save-thresholds"
        )
        if isinstance(evaluated.decision, tuple):
            console.info(
                f"predict and export decide with the saved per-label thresholds (thresholds.json): "
                f"{threshold_text(evaluated.decision, self.classes)}"
            )

    def _top_losses(self, ctx: ReportContext, probs: np.ndarray) -> None:
        evaluated, thresh = ctx.evaluated, ctx.evaluated.thresh
        chosen = top_losses(evaluated.losses, ctx.k).tolist()

        def named(row: np.ndarray, cut: float) -> str:
            return " ".join(v for v, p in zip(self.classes, row, strict=True) if p > cut) or "-"

        rows = [
            (
                evaluated.names[p],
                named(probs[p], thresh),
                named(evaluated.targets[p].numpy(), 0.5),
                float(evaluated.losses[p]),
            )
            for p in chosen
        ]
        pd.DataFrame(rows, columns=["item", "predicted", "actual", "loss"]).to_csv(
            ctx.folder / "top_losses.csv", index=False, float_format="%.4f"
        )
        if chosen:
            images = evaluated.images(chosen)
            titles = [f"{predicted}\n{actual}\n{loss:.3f}" for _, predicted, actual, loss in rows]
            image_grid(
                images,
                titles,
                ctx.folder / "top_losses.png",
                ncols=grid_columns(len(images)),
                suptitle="Prediction/Actual/Loss",
            )
