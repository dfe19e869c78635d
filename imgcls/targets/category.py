"""Single-label classification: one class per image, softmax over the vocab (fastai's CategoryBlock)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from imgcls.errors import DataError
from imgcls.report.plots import image_grid, plot_confusion
from imgcls.targets.base import (
    EncodedTargets,
    Evaluated,
    ReportContext,
    ShownResult,
    Threshold,
    VocabTarget,
    grid_columns,
    top_losses,
    unknown_labels_error,
)
from imgcls.targets.calibration import Calibration, fit_temperature, multiclass_ece

LABEL_SCORE = "self_confidence"  # cleanlab's default: the predicted probability of the given label
UNKNOWN = "unknown"  # predict --min-confidence: the label of an item whose top probability is below it
_LOG_FLOOR = torch.finfo(torch.float32).tiny  # log(0) would give -inf losses for a blended probability of 0


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[actual, predicted]."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (actual, predicted), 1)
    return matrix


def most_confused(matrix: np.ndarray, vocab: Sequence[str], min_val: int = 1) -> list[tuple[str, str, int]]:
    """Off-diagonal (actual, predicted, count) with count >= min_val, most frequent first (ties by name)."""
    pairs = [
        (vocab[i], vocab[j], int(matrix[i, j]))
        for i in range(len(vocab))
        for j in range(len(vocab))
        if i != j and matrix[i, j] >= min_val
    ]
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))


def per_class_report(matrix: np.ndarray, vocab: Sequence[str]) -> pd.DataFrame:
    """precision, recall, F1 and support per class (0 where undefined, as sklearn's zero_division=0)."""
    true_pos = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    support = matrix.sum(axis=1).astype(float)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_pos), where=denominator > 0)
    columns = {"class": list(vocab), "precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)}
    report: pd.DataFrame = pd.DataFrame(columns)
    return report


def normalized_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total (rows with no item stay 0): the share of each actual class per prediction."""
    totals = matrix.sum(axis=1, keepdims=True).astype(float)
    shares: np.ndarray = np.divide(matrix.astype(float), totals, out=np.zeros(matrix.shape), where=totals > 0)
    return shares


@dataclass(frozen=True, eq=False)
class Category(VocabTarget):
    """The vocab is the sorted set of training labels."""

    kind = "category"
    default_loss = "cross_entropy"
    losses = ("cross_entropy", "label_smoothing_cross_entropy", "focal")
    metrics = ("accuracy", "error_rate", "balanced_accuracy", "top_k_accuracy", "f1_macro")
    activation_name = "softmax"
    # One temperature for all classes (Guo et al. 2017): it rescales every logit alike, so the predicted class
    # and the ranking of the classes never change; only how sure the probabilities are.
    calibration_method = "temperature"
    reliability_text = "top probability"
    loss_options = ("class_weights",)
    weight_option = "class_weights"
    # sklearn's class_weight='balanced': the weights average 1 over the training items.
    weight_rule = "N / (C * n_c): N training items, C classes, n_c training items of class c"
    can_balance = True

    @classmethod
    def encode(cls, labels: list[Any], train: np.ndarray, valid: np.ndarray) -> EncodedTargets:
        if any(isinstance(label, list | tuple | np.ndarray) for label in labels):
            raise DataError(
                "labels are lists, but the target block is 'category'",
                hint="use blocks: [image, multi_category] for several labels per image",
            )
        text = [str(label) for label in labels]
        vocab = sorted({text[i] for i in train})
        lookup = {label: index for index, label in enumerate(vocab)}
        unknown = Counter(text[i] for i in valid if text[i] not in lookup)
        if unknown:
            raise unknown_labels_error(unknown, vocab)
        if len(vocab) < 2:
            raise DataError(f"only one class in the training set ('{vocab[0]}'); a classifier needs at least two")
        values = np.array([lookup.get(label, -1) for label in text], dtype=np.int64)
        return EncodedTargets(cls(tuple(vocab)), values)

    def class_counts(self, values: np.ndarray) -> dict[str, int]:
        counts = Counter(int(v) for v in values)
        return {name: counts.get(i, 0) for i, name in enumerate(self.classes)}

    def _counts(self, values: np.ndarray) -> np.ndarray:
        # The vocab comes from the training labels, so no class has 0 items there; the floor only guards.
        return np.maximum(np.bincount(values.astype(np.int64), minlength=self.n_out), 1).astype(np.float64)

    def loss_weights(self, values: np.ndarray) -> np.ndarray:
        weights: np.ndarray = len(values) / (self.n_out * self._counts(values))
        return weights

    def balancing_weights(self, values: np.ndarray) -> np.ndarray:
        weights: np.ndarray = 1.0 / self._counts(values)[values.astype(np.int64)]
        return weights

    def describe(self) -> str:
        return f"{self.n_out} classes: {', '.join(self.classes)}"

    def label_text(self, value: np.ndarray | torch.Tensor) -> str:
        return self.classes[int(value)]

    def soft_targets(self, targets: torch.Tensor) -> torch.Tensor:
        if targets.ndim == 1:
            return torch.nn.functional.one_hot(targets.long(), self.n_out).float()
        return targets.float()

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs.float(), dim=-1)

    def inverse_activation(self, values: torch.Tensor) -> torch.Tensor:
        # log p activates back to p when p sums to 1 (softmax is shift-invariant)
        return torch.log(values.clamp(min=_LOG_FLOOR))

    def decide(self, values: np.ndarray, thresh: Threshold) -> np.ndarray:
        decided: np.ndarray = values.argmax(axis=-1)
        return decided

    def prediction_columns(self, top_k: int) -> list[str]:
        columns = []
        for rank in range(1, min(top_k, self.n_out) + 1):
            columns += [f"pred_{rank}", f"prob_{rank}"]
        return columns

    def prediction_row(
        self,
        values: np.ndarray,
        points: np.ndarray | None,
        size: tuple[int, int] | None,
        top_k: int,
        thresh: Threshold,
    ) -> dict[str, object]:
        row: dict[str, object] = {}
        order = np.argsort(-values, kind="stable")[: min(top_k, self.n_out)]
        for rank, index in enumerate(order, start=1):
            row[f"pred_{rank}"], row[f"prob_{rank}"] = self.classes[index], float(values[index])
        return row

    def prediction_text(self, row: dict[str, Any]) -> str:
        ranks = [r for r in range(1, 4) if f"pred_{r}" in row]
        text = ", ".join(f"{row[f'pred_{r}']} {row[f'prob_{r}']:.3f}" for r in ranks)
        return f"{UNKNOWN} (top: {text})" if row.get("label") == UNKNOWN else text

    def withheld_columns(self) -> list[str]:
        return ["label"]

    def withhold(
        self, row: dict[str, object], values: np.ndarray, min_confidence: float, thresh: Threshold
    ) -> dict[str, object]:
        """`label`: the top class, or `unknown` when its probability is below `min_confidence`; the pred_i and
        prob_i columns stay as they are."""
        best = int(np.argmax(values))
        return {"label": self.classes[best] if float(values[best]) >= min_confidence else UNKNOWN, **row}

    # --- calibration ---------------------------------------------------------------------------------------

    def _fit_map(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[Calibration, str]:
        if bool((outputs.argmax(dim=1) == targets.long()).all()):
            # Every item's top class is its label: each item's NLL falls as T -> 0, so theirs has no minimum and a
            # fit would only sharpen every probability towards 1 (T at its bound).
            note = (
                f"every one of the {len(outputs)} validation items is predicted right: the NLL falls without bound "
                "as T -> 0, so no temperature is fitted (T = 1); validate on more (or harder) items to calibrate"
            )
            return Calibration("temperature", temperature=1.0), note
        return Calibration("temperature", temperature=fit_temperature(outputs, targets.long())), ""

    def _nll(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return float(torch.nn.functional.cross_entropy(outputs.double(), targets.long()))

    def _ece(self, probs: torch.Tensor, targets: torch.Tensor) -> float:
        return multiclass_ece(probs, targets.long())

    def _reliability(self, probs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top, predicted = probs.max(dim=1)
        return top, (predicted == targets.long()).double()

    def strata(self, values: np.ndarray) -> np.ndarray:
        """The class: every fold gets its share of each class."""
        return values.astype(np.int64)

    def label_quality(
        self, probs: np.ndarray, targets: np.ndarray, thresh: Threshold
    ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        labels = targets.astype(np.int64)
        probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 only within ~1e-7
        scores = get_label_quality_scores(labels, probs, method=LABEL_SCORE)
        issues = find_label_issues(labels, probs, n_jobs=1)
        given = [self.classes[int(label)] for label in labels]
        suggested = [self.classes[int(best)] for best in probs.argmax(axis=1)]
        return np.asarray(scores, dtype=np.float64), np.asarray(issues, dtype=bool), given, suggested

    # --- reports -----------------------------------------------------------------------------------------

    def show_results(self, evaluated: Evaluated, positions: Sequence[int]) -> list[ShownResult]:
        probs = self.activation(evaluated.outputs)
        shown = []
        for p in positions:
            predicted, actual = int(probs[p].argmax()), int(evaluated.targets[p])
            title = (
                f"actual {self.classes[actual]}\npredicted {self.classes[predicted]} ({float(probs[p, predicted]):.2f})"
            )
            shown.append(ShownResult(title, predicted == actual))
        return shown

    def _matrix(self, ctx: ReportContext) -> np.ndarray:
        evaluated = ctx.evaluated
        return confusion_matrix(evaluated.targets.long().numpy(), evaluated.outputs.argmax(dim=-1).numpy(), self.n_out)

    def _write_confusion(self, ctx: ReportContext, matrix: np.ndarray) -> list[tuple[str, str, int]]:
        vocab = list(self.classes)
        frame = pd.DataFrame(matrix, index=pd.Index(vocab, name="actual"), columns=vocab)
        frame.to_csv(ctx.folder / "confusion_matrix.csv")
        plot_confusion(matrix, vocab, ctx.folder / "confusion_matrix.png")
        plot_confusion(matrix, vocab, ctx.folder / "confusion_matrix_normalized.png", normalize=True)
        pairs = most_confused(matrix, vocab, ctx.min_count)
        pd.DataFrame(pairs, columns=["actual", "predicted", "count"]).to_csv(
            ctx.folder / "most_confused.csv", index=False
        )
        return pairs

    def training_report(self, ctx: ReportContext) -> tuple[list[str], list[str]]:
        matrix = self._matrix(ctx)
        pairs = self._write_confusion(ctx, matrix)
        right = int(np.trace(matrix))
        lines = [f"accuracy {right / max(int(matrix.sum()), 1):.4f} ({right} of {int(matrix.sum())} right)"]
        if pairs:
            shown = "; ".join(f"{a} -> {p} ({n})" for a, p, n in pairs[:5])
            lines.append(f"most confused (actual -> predicted): {shown}")
        else:
            lines.append("no class confused with another")
        return lines, ["confusion_matrix.csv/.png", "confusion_matrix_normalized.png", "most_confused.csv"]

    def interpret(self, ctx: ReportContext) -> list[str]:
        console, min_count = ctx.console, ctx.min_count
        matrix = self._matrix(ctx)
        pairs = self._write_confusion(ctx, matrix)
        vocab = list(self.classes)
        normalized = pd.DataFrame(normalized_rows(matrix), index=pd.Index(vocab, name="actual"), columns=vocab)
        normalized.to_csv(ctx.folder / "confusion_matrix_normalized.csv", float_format="%.4f")
        report = per_class_report(matrix, vocab)
        report.to_csv(ctx.folder / "per_class.csv", index=False, float_format="%.4f")
        total = max(int(matrix.sum()), 1)
        wrong = int(matrix.sum() - np.trace(matrix))
        console.info(f"accuracy {np.trace(matrix) / total:.4f}: {wrong} of {matrix.sum()} wrong")
        majority = int(matrix.sum(axis=1).argmax())
        console.info(
            f"baseline: always '{vocab[majority]}' (the most frequent validation class) scores "
            f"{matrix.sum(axis=1)[majority] / total:.4f}; chance over {self.n_out} classes {1 / self.n_out:.4f}"
        )
        if pairs:
            console.info(f"most confused (actual -> predicted, at least {min_count}):")
            for actual_name, predicted_name, count in pairs[:10]:
                console.info(f"  {actual_name} -> {predicted_name}: {count}")
        else:
            console.info(f"no pair of classes confused at least {min_count} time(s)")
        console.info(f"{'class':<20}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
        shown = report.sort_values("f1", kind="stable").head(20)
        for _, row in shown.sort_index().iterrows():
            name = str(row["class"])
            console.info(
                f"{name:<20}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}{row['support']:>9d}"
            )
        if len(report) > len(shown):
            console.info(f"  (the {len(shown)} classes with the lowest F1; all {len(report)} in per_class.csv)")
        self._top_losses(ctx)
        return [
            "confusion_matrix.csv/.png",
            "confusion_matrix_normalized.csv/.png",
            "most_confused.csv",
            "per_class.csv",
            "top_losses.csv/.png",
            *self._calibration_report(ctx),
        ]

    def _top_losses(self, ctx: ReportContext) -> None:
        evaluated = ctx.evaluated
        probs = self.activation(evaluated.outputs)
        chosen = top_losses(evaluated.losses, ctx.k).tolist()
        rows, titles = [], []
        for position in chosen:
            predicted = int(probs[position].argmax())
            actual = self.classes[int(evaluated.targets[position])]
            loss, probability = float(evaluated.losses[position]), float(probs[position, predicted])
            rows.append((evaluated.names[position], self.classes[predicted], actual, loss, probability))
            titles.append(f"{self.classes[predicted]}/{actual} / {loss:.2f} / {probability:.2f}")
        frame = pd.DataFrame(rows, columns=["item", "predicted", "actual", "loss", "probability"])
        frame.to_csv(ctx.folder / "top_losses.csv", index=False, float_format="%.4f")
        if not chosen:
            return
        images = evaluated.images(chosen)
        image_grid(
            images,
            titles,
            ctx.folder / "top_losses.png",
            ncols=grid_columns(len(images)),
            suptitle="Prediction/Actual/Loss/Probability",
        )
        ctx.console.info(f"top {len(rows)} losses (prediction/actual, loss, probability of the prediction):")
        for item, predicted_name, actual_name, loss, probability in rows:
            ctx.console.info(f"  {item}: {predicted_name}/{actual_name}, {loss:.2f}, {probability:.2f}")
