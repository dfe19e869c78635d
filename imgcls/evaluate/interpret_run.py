"""`imgcls interpret`: what a trained model gets wrong, per target kind, written to RUN/interpret/.

Classification: confusion matrix (counts and row-normalized, CSV and PNG), most confused pairs, precision, recall and
F1 per class, and the top losses as fastai's plot_top_losses shows them. Multi-label: per-label precision, recall,
F1 and accuracy at the run's threshold, and accuracy_multi against the threshold (the book's sweep). Points: the
error of every validation image in original pixels and at the model's input size, and the worst images with the
true and the predicted points drawn. Regression: MAE, RMSE, bias and R² per target, predicted against actual, and the
images with the largest errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from imgcls.data.datablock import DataBundle
from imgcls.data.dataset import BadItem
from imgcls.data.loaders import Collate
from imgcls.errors import ImgclsError
from imgcls.evaluate.infer import item_to_source, source_size
from imgcls.evaluate.interpret import (
    THRESHOLDS,
    class_decisions,
    confusion_matrix,
    multilabel_report,
    normalized_rows,
    per_class_report,
    point_distances,
    regression_report,
    threshold_sweep,
    top_losses,
)
from imgcls.evaluate.load import LoadedRun, load_run, valid_loader, validation_data
from imgcls.evaluate.passes import Pass, as_points, geometry_pass
from imgcls.evaluate.predict import Predictions
from imgcls.evaluate.report import write_confusion
from imgcls.report.console import Console
from imgcls.report.plots import image_grid, plot_predicted_vs_actual, plot_threshold_sweep
from imgcls.report.show_batch import to_display

TOP_K = 9


@dataclass
class Context:
    loaded: LoadedRun
    data: DataBundle
    result: Pass
    losses: torch.Tensor
    folder: Path
    console: Console
    k: int

    def name(self, position: int) -> str:
        """The validation item at `position` of the pass, relative to the data root."""
        return self.data.items.relative(int(self.result.indices[position]))


def model_view(loaded: LoadedRun, data: DataBundle, items: list[int]) -> list[np.ndarray]:
    """The validation images of `items` (item indices) as the model saw them: HWC uint8, denormalized."""
    dataset = data.dataset(train=False, seed=loaded.spec.seed)
    position = {int(item): number for number, item in enumerate(dataset.indices)}
    collate = Collate(dataset.paths)
    augment = loaded.augment
    images = []
    for item in items:
        sample = dataset[(position[item], 0)]
        if isinstance(sample, BadItem):  # it was read a moment ago; a file changed under us
            raise ImgclsError(f"cannot read {sample.path}: {sample.reason}")
        batch = collate([sample])
        x, _ = augment(batch.images.to(loaded.runtime.device), train=False)
        images.extend(to_display(x, augment))
    return images


# --- classification -------------------------------------------------------------------------------------------


def _classification(ctx: Context, min_count: int) -> list[str]:
    loaded, result, console = ctx.loaded, ctx.result, ctx.console
    vocab = loaded.info.vocab
    predictions = Predictions(result.outputs, result.targets, result.indices, ctx.losses)
    pairs = write_confusion(loaded, predictions, ctx.folder, min_count)
    actual = result.targets.long().numpy()
    matrix = confusion_matrix(actual, class_decisions(result.outputs), len(vocab))
    normalized = pd.DataFrame(normalized_rows(matrix), index=pd.Index(vocab, name="actual"), columns=vocab)
    normalized.to_csv(ctx.folder / "confusion_matrix_normalized.csv", float_format="%.4f")
    report = per_class_report(matrix, vocab)
    report.to_csv(ctx.folder / "per_class.csv", index=False, float_format="%.4f")
    wrong = int(matrix.sum() - np.trace(matrix))
    console.info(f"accuracy {np.trace(matrix) / max(matrix.sum(), 1):.4f}: {wrong} of {matrix.sum()} wrong")
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
        console.info(f"{name:<20}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}{row['support']:>9d}")
    if len(report) > len(shown):
        console.info(f"  (the {len(shown)} classes with the lowest F1; all {len(report)} in per_class.csv)")
    _classification_top_losses(ctx)
    return [
        "confusion_matrix.csv/.png",
        "confusion_matrix_normalized.csv/.png",
        "most_confused.csv",
        "per_class.csv",
        "top_losses.csv/.png",
    ]


def _classification_top_losses(ctx: Context) -> None:
    vocab = ctx.loaded.info.vocab
    probs = ctx.loaded.loss.activation(ctx.result.outputs)
    chosen = top_losses(ctx.losses, ctx.k).tolist()
    rows, titles = [], []
    for position in chosen:
        predicted = int(probs[position].argmax())
        actual = vocab[int(ctx.result.targets[position])]
        loss, probability = float(ctx.losses[position]), float(probs[position, predicted])
        rows.append((ctx.name(position), vocab[predicted], actual, loss, probability))
        titles.append(f"{vocab[predicted]}/{actual} / {loss:.2f} / {probability:.2f}")
    frame = pd.DataFrame(rows, columns=["item", "predicted", "actual", "loss", "probability"])
    frame.to_csv(ctx.folder / "top_losses.csv", index=False, float_format="%.4f")
    if not chosen:
        return
    images = model_view(ctx.loaded, ctx.data, [int(ctx.result.indices[p]) for p in chosen])
    ncols = int(np.ceil(np.sqrt(len(images))))
    image_grid(
        images, titles, ctx.folder / "top_losses.png", ncols=ncols, suptitle="Prediction/Actual/Loss/Probability"
    )
    ctx.console.info(f"top {len(rows)} losses (prediction/actual, loss, probability of the prediction):")
    for item, predicted_name, actual_name, loss, probability in rows:
        ctx.console.info(f"  {item}: {predicted_name}/{actual_name}, {loss:.2f}, {probability:.2f}")


# --- multi-label ----------------------------------------------------------------------------------------------


def _multilabel(ctx: Context) -> list[str]:
    loaded, result, console = ctx.loaded, ctx.result, ctx.console
    vocab, thresh = loaded.info.vocab, loaded.thresh
    probs = torch.sigmoid(result.outputs).numpy()
    report = multilabel_report(probs, result.targets.numpy(), vocab, thresh)
    report.to_csv(ctx.folder / "per_label.csv", index=False, float_format="%.4f")
    accuracies = threshold_sweep(result.outputs, result.targets)
    sweep = pd.DataFrame({"threshold": THRESHOLDS, "accuracy_multi": accuracies})
    sweep.to_csv(ctx.folder / "threshold_sweep.csv", index=False, float_format="%.4f")
    plot_threshold_sweep(THRESHOLDS, accuracies, thresh, ctx.folder / "threshold_sweep.png")
    best = int(accuracies.argmax())
    at_run = float(((probs > thresh) == (result.targets.numpy() > 0.5)).mean())
    console.info(f"accuracy_multi at the run's threshold {thresh:.2f}: {at_run:.4f}")
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
    console.info(f"per label at {thresh:.2f}:")
    console.info(f"{'label':<20}{'precision':>10}{'recall':>10}{'f1':>10}{'accuracy':>10}{'support':>9}")
    for _, row in report.iterrows():
        console.info(
            f"{row['label']!s:<20}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}"
            f"{row['accuracy']:>10.4f}{row['support']:>9d}"
        )
    _multilabel_top_losses(ctx, probs)
    return ["per_label.csv", "threshold_sweep.csv/.png", "top_losses.csv/.png"]


def _multilabel_top_losses(ctx: Context, probs: np.ndarray) -> None:
    vocab, thresh = ctx.loaded.info.vocab, ctx.loaded.thresh
    chosen = top_losses(ctx.losses, ctx.k).tolist()

    def labels(row: np.ndarray, cut: float) -> str:
        return " ".join(v for v, p in zip(vocab, row, strict=True) if p > cut) or "-"

    rows = [
        (ctx.name(p), labels(probs[p], thresh), labels(ctx.result.targets[p].numpy(), 0.5), float(ctx.losses[p]))
        for p in chosen
    ]
    pd.DataFrame(rows, columns=["item", "predicted", "actual", "loss"]).to_csv(
        ctx.folder / "top_losses.csv", index=False, float_format="%.4f"
    )
    if chosen:
        images = model_view(ctx.loaded, ctx.data, [int(ctx.result.indices[p]) for p in chosen])
        titles = [f"{predicted}\n{actual}\n{loss:.3f}" for _, predicted, actual, loss in rows]
        ncols = int(np.ceil(np.sqrt(len(images))))
        image_grid(images, titles, ctx.folder / "top_losses.png", ncols=ncols, suptitle="Prediction/Actual/Loss")


# --- points ---------------------------------------------------------------------------------------------------


def _points(ctx: Context) -> list[str]:
    loaded, data, result, console = ctx.loaded, ctx.data, ctx.result, ctx.console
    predicted_items = result.geometry.to_input(as_points(result.outputs)).numpy()
    predicted, actual, sizes = [], [], []
    for position in range(len(result)):
        item = int(result.indices[position])
        size = source_size(data.items.paths[item])
        window = data.item_tfm.window(size, None) if data.item_tfm is not None else None
        predicted.append(item_to_source(predicted_items[position], window, size))
        actual.append(np.asarray(data.targets.values[item], dtype=np.float32))
        sizes.append(size)
    errors = point_distances(np.stack(predicted), np.stack(actual))
    height, width = loaded.size or (data.item_tfm.size if data.item_tfm is not None else (0, 0))
    half = np.array([width / 2, height / 2], dtype=np.float32)
    in_pixels = point_distances(as_points(result.outputs).numpy() * half, result.targets.numpy() * half)
    frame = pd.DataFrame(
        {
            "item": [ctx.name(p) for p in range(len(result))],
            "error_px": errors,
            f"error_px_at_{width}x{height}": in_pixels,
            "width": [s[0] for s in sizes],
            "height": [s[1] for s in sizes],
        }
    )
    for number in range(loaded.info.n_points):
        frame[f"x_{number + 1}"] = [p[number, 0] for p in predicted]
        frame[f"y_{number + 1}"] = [p[number, 1] for p in predicted]
        frame[f"true_x_{number + 1}"] = [a[number, 0] for a in actual]
        frame[f"true_y_{number + 1}"] = [a[number, 1] for a in actual]
    frame.sort_values("error_px", ascending=False, kind="stable").to_csv(
        ctx.folder / "point_errors.csv", index=False, float_format="%.3f"
    )
    console.info(
        f"mean error {errors.mean():.2f} px in the original images (median {np.median(errors):.2f}, "
        f"max {errors.max():.2f}); {in_pixels.mean():.2f} px at the model's input size {width}x{height}"
    )
    worst = np.argsort(-errors, kind="stable")[: ctx.k].tolist()
    console.info("largest errors (original pixels, true -> predicted):")
    for position in worst:
        true_text = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in actual[position])
        pred_text = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in predicted[position])
        console.info(f"  {ctx.name(position)}: {errors[position]:.1f} px, {true_text} -> {pred_text}")
    if worst:
        images = model_view(loaded, data, [int(result.indices[p]) for p in worst])
        drawn = []
        for position, image in zip(worst, images, strict=True):
            scale = np.array([image.shape[1] / 2, image.shape[0] / 2], dtype=np.float32)
            true_px = (result.targets[position].numpy() + 1) * scale
            pred_px = (as_points(result.outputs[position : position + 1])[0].numpy() + 1) * scale
            drawn.append([true_px, pred_px])
        titles = [f"{Path(ctx.name(p)).name}\nerror {errors[p]:.1f} px (original)" for p in worst]
        ncols = int(np.ceil(np.sqrt(len(images))))
        image_grid(
            images,
            titles,
            ctx.folder / "largest_errors.png",
            drawn,
            ncols,
            suptitle="true (o) and predicted (x) points",
        )
    return ["point_errors.csv", "largest_errors.png"]


# --- regression -----------------------------------------------------------------------------------------------


def _regression(ctx: Context) -> list[str]:
    predicted = ctx.loaded.loss.activation(ctx.result.outputs).numpy().reshape(len(ctx.result), -1)
    actual = ctx.result.targets.float().numpy().reshape(len(ctx.result), -1)
    report = regression_report(predicted, actual)
    report.to_csv(ctx.folder / "regression.csv", index=False, float_format="%.4f")
    for _, row in report.iterrows():
        ctx.console.info(
            f"{row['target']}: MAE {row['mae']:.4g}, RMSE {row['rmse']:.4g}, bias {row['bias']:+.4g}, "
            f"R² {row['r2']:.4f}"
        )
    errors = np.abs(predicted - actual).mean(axis=1)
    frame = pd.DataFrame({"item": [ctx.name(p) for p in range(len(ctx.result))], "abs_error": errors})
    for number in range(actual.shape[1]):
        frame[f"value_{number + 1}"] = predicted[:, number]
        frame[f"true_value_{number + 1}"] = actual[:, number]
    frame.sort_values("abs_error", ascending=False, kind="stable").to_csv(
        ctx.folder / "errors.csv", index=False, float_format="%.4f"
    )
    plot_predicted_vs_actual(predicted, actual, ctx.folder / "predicted_vs_actual.png")
    worst = np.argsort(-errors, kind="stable")[: ctx.k].tolist()
    ctx.console.info("largest errors (true -> predicted):")
    for position in worst:
        true_text = ", ".join(f"{v:.4g}" for v in actual[position])
        pred_text = ", ".join(f"{v:.4g}" for v in predicted[position])
        ctx.console.info(f"  {ctx.name(position)}: {true_text} -> {pred_text}")
    if worst:
        images = model_view(ctx.loaded, ctx.data, [int(ctx.result.indices[p]) for p in worst])
        titles = [
            f"{Path(ctx.name(p)).name}\n{', '.join(f'{v:.3g}' for v in actual[p])} -> "
            f"{', '.join(f'{v:.3g}' for v in predicted[p])}"
            for p in worst
        ]
        ncols = int(np.ceil(np.sqrt(len(images))))
        image_grid(images, titles, ctx.folder / "largest_errors.png", ncols=ncols, suptitle="actual -> predicted")
    return ["regression.csv", "errors.csv", "predicted_vs_actual.png", "largest_errors.png"]


# --- the command ----------------------------------------------------------------------------------------------


def run_interpret(
    run_dir: Path,
    which: str = "best",
    out: Path | None = None,
    k: int = TOP_K,
    min_count: int = 1,
    quiet: bool = False,
) -> Path:
    """`imgcls interpret`: write the interpretation of the run's validation predictions to `out` (RUN/interpret)."""
    console = Console(quiet)
    loaded = load_run(run_dir, which)
    data = validation_data(loaded)
    folder = out or run_dir / "interpret"
    folder.mkdir(parents=True, exist_ok=True)
    result = geometry_pass(loaded.model, valid_loader(loaded, data), loaded.runtime, console, "validation")
    if len(result) == 0:
        raise ImgclsError("no validation item could be evaluated", hint="check the split and the image files")
    losses = loaded.loss.per_item(result.outputs, result.targets)
    ctx = Context(loaded, data, result, losses, folder, console, k)
    console.info(f"interpret: {loaded.checkpoint.path} on {len(result)} validation items")
    if loaded.info.kind == "category":
        written = _classification(ctx, min_count)
    elif loaded.info.kind == "multi_category":
        written = _multilabel(ctx)
    elif loaded.info.kind == "point":
        written = _points(ctx)
    else:
        written = _regression(ctx)
    console.info(f"wrote {folder}/: {', '.join(written)}")
    return folder


__all__ = ["model_view", "run_interpret"]
