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
