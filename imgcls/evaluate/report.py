"""The report written at the end of `imgcls train`: training curves, and for classifiers the confusion matrix
of the best checkpoint and its most confused pairs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from imgcls.evaluate.interpret import class_decisions, confusion_matrix, most_confused
from imgcls.evaluate.load import LoadedRun, load_run, valid_loader, validation_data
from imgcls.evaluate.predict import Predictions, predict
from imgcls.report.console import Console
from imgcls.report.plots import plot_confusion, plot_metrics


def write_confusion(
    loaded: LoadedRun, predictions: Predictions, folder: Path, min_val: int = 1
) -> list[tuple[str, str, int]]:
    """confusion_matrix.csv/.png (counts), confusion_matrix_normalized.png, most_confused.csv."""
    vocab = loaded.info.vocab
    matrix = confusion_matrix(predictions.targets.long().numpy(), class_decisions(predictions.outputs), len(vocab))
    frame = pd.DataFrame(matrix, index=pd.Index(vocab, name="actual"), columns=vocab)
    frame.to_csv(folder / "confusion_matrix.csv")
    plot_confusion(matrix, vocab, folder / "confusion_matrix.png")
    plot_confusion(matrix, vocab, folder / "confusion_matrix_normalized.png", normalize=True)
    pairs = most_confused(matrix, vocab, min_val)
    pd.DataFrame(pairs, columns=["actual", "predicted", "count"]).to_csv(folder / "most_confused.csv", index=False)
    return pairs


def final_report(run_dir: Path, console: Console) -> None:
    metrics_csv = run_dir / "metrics.csv"
    if metrics_csv.exists():
        plot_metrics(metrics_csv, run_dir / "metrics.png")
    loaded = load_run(run_dir, "best")
    if loaded.info.kind != "category":
        return
    predictions = predict(loaded.model, valid_loader(loaded, validation_data(loaded)), loaded.loss, loaded.runtime)
    pairs = write_confusion(loaded, predictions, run_dir)
    best = loaded.checkpoint.meta.get("metrics", {})
    summary = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if isinstance(v, float) and k not in ("lr", "seconds"))
    console.info(f"best checkpoint (epoch row {best.get('epoch', '?')} of {best.get('phase', '?')}): {summary}")
    if pairs:
        shown = "; ".join(f"{a} -> {p} ({n})" for a, p, n in pairs[:5])
        console.info(f"most confused (actual -> predicted): {shown}")
    console.info(f"wrote {run_dir}/metrics.csv, metrics.png, confusion_matrix.csv/.png, most_confused.csv")
