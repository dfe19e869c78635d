"""Interpretation of predictions: confusion matrix, most confused pairs, per-class precision/recall/F1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[actual, predicted]."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (actual, predicted), 1)
    return matrix


def most_confused(matrix: np.ndarray, vocab: list[str], min_val: int = 1) -> list[tuple[str, str, int]]:
    """Off-diagonal (actual, predicted, count) with count >= min_val, most frequent first (ties by name)."""
    pairs = [
        (vocab[i], vocab[j], int(matrix[i, j]))
        for i in range(len(vocab))
        for j in range(len(vocab))
        if i != j and matrix[i, j] >= min_val
    ]
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))


def per_class_report(matrix: np.ndarray, vocab: list[str]) -> pd.DataFrame:
    """precision, recall, F1 and support per class (0 where undefined, as sklearn's zero_division=0)."""
    true_pos = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    support = matrix.sum(axis=1).astype(float)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_pos), where=denominator > 0)
    columns = {"class": vocab, "precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)}
    report: pd.DataFrame = pd.DataFrame(columns)
    return report


def class_decisions(outputs: torch.Tensor) -> np.ndarray:
    return outputs.argmax(dim=-1).numpy()


def normalized_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total (rows with no item stay 0): the share of each actual class per prediction."""
    totals = matrix.sum(axis=1, keepdims=True).astype(float)
    shares: np.ndarray = np.divide(matrix.astype(float), totals, out=np.zeros(matrix.shape), where=totals > 0)
    return shares


def top_losses(losses: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the k largest losses, largest first (ties: the earlier item first)."""
    k = min(k, len(losses))
    order = torch.sort(losses, descending=True, stable=True).indices
    return order[:k]


# --- multi-label ------------------------------------------------------------------------------------------------

THRESHOLDS = np.linspace(0.05, 0.95, 29)  # the book's sweep


def multilabel_report(probs: np.ndarray, targets: np.ndarray, vocab: list[str], thresh: float) -> pd.DataFrame:
    """Per label at `thresh` (probabilities > thresh): precision, recall, F1, accuracy (share of items decided
    right), support (items with the label) and how many items were predicted to have it."""
    predicted = probs > thresh
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
        "label": vocab,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": accuracy,
        "support": support.astype(int),
        "predicted": n_predicted.astype(int),
    }
    report: pd.DataFrame = pd.DataFrame(columns)
    return report


def threshold_sweep(outputs: torch.Tensor, targets: torch.Tensor, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """accuracy_multi (sigmoid of the raw outputs) at each threshold."""
    from imgcls.train.metrics import accuracy_multi

    return np.array([accuracy_multi(outputs, targets, float(t)) for t in thresholds])


# --- points -------------------------------------------------------------------------------------------------------


def point_distances(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance per item between (N, P, 2) predicted and actual points."""
    distances: np.ndarray = np.linalg.norm(predicted - actual, axis=-1).mean(axis=-1)
    return distances


# --- regression ---------------------------------------------------------------------------------------------------


def regression_report(predicted: np.ndarray, actual: np.ndarray) -> pd.DataFrame:
    """Per target of (N, k) values: MAE, RMSE, bias (mean of predicted - actual) and R² (1 - SSE / SST; 0 where
    the actual values are constant, because no model beats the mean there)."""
    error = predicted - actual
    sse = (error**2).sum(axis=0)
    sst = ((actual - actual.mean(axis=0)) ** 2).sum(axis=0)
    r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), 0.0)
    report: pd.DataFrame = pd.DataFrame(
        {
            "target": [f"value_{number + 1}" for number in range(actual.shape[1])],
            "mae": np.abs(error).mean(axis=0),
            "rmse": np.sqrt((error**2).mean(axis=0)),
            "bias": error.mean(axis=0),
            "r2": r2,
        }
    )
    return report
