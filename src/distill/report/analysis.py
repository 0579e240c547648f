"""What the report computes from a run's test logits: softmax, confusion matrices, per-class
accuracy, the teacher's "dark knowledge" (the probability it gives each wrong class) and the
largest off-diagonal pairs. numpy only."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``; ``logits``: (N, C) -> (N, C), rows sum to 1."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion_matrix(labels: np.ndarray, logits: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (C, C) of [true class, predicted class] (prediction = argmax of ``logits`` (N, C))."""
    pred = np.asarray(logits).argmax(axis=1)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), pred), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """(C,) accuracy of each true class from a confusion matrix; NaN for a class with no test sample."""
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def dark_knowledge(labels: np.ndarray, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Mean probability the teacher gives each wrong class, per true class.

    ``labels``: (N,), ``logits``: (N, C). Returns (C, C): entry [i, j] (j != i) is the mean over test
    samples of true class i of softmax(logits / T)[j]; the diagonal and rows without samples are NaN.
    """
    probs = softmax(logits, temperature)
    c = probs.shape[1]
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full((c, c), np.nan)
    for i in range(c):
        rows = probs[labels == i]
        if len(rows):
            out[i] = rows.mean(axis=0)
    np.fill_diagonal(out, np.nan)
    return out


def top_pairs(matrix: np.ndarray, class_names: list[str], k: int = 5) -> list[tuple[str, str, float, int, int]]:
    """The ``k`` largest off-diagonal finite entries of ``matrix`` as (true name, other name, value, i, j)."""
    m = np.where(np.isfinite(matrix), matrix, -np.inf)
    flat = np.argsort(m, axis=None)[::-1]
    out = []
    for idx in flat[:k]:
        i, j = np.unravel_index(idx, m.shape)
        if not np.isfinite(m[i, j]):
            break
        out.append((class_names[i], class_names[j], float(m[i, j]), int(i), int(j)))
    return out
