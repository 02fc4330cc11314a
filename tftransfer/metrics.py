"""The metrics that training, export and the reports share, in numpy.

One definition of each, so that a figure means the same wherever it is
printed: average precision is the exact step sum of scikit-learn's
`average_precision_score` (not Keras's interpolated `AUC(curve="PR")`), and
precision, recall and F1 come from the same counts for a class or a label.
"""

from typing import Optional

import numpy as np


def scores_of_counts(true_positives: int, predicted: int, support: int) -> dict:
    """Precision, recall and F1 of one class (or label) from its counts.

    Args:
        true_positives: Examples of the class predicted as it.
        predicted: Examples predicted as the class.
        support: Examples of the class.

    Returns:
        `{"precision", "recall", "f1", "support"}`; precision is 0 when the
        class is never predicted, recall 0 when it has no example.

    Example:
    >>> scores_of_counts(3, 4, 6)
    {'precision': 0.75, 'recall': 0.5, 'f1': 0.6, 'support': 6}
    """
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
            "support": int(support)}


def precision_recall_curve(positive: np.ndarray, scores: np.ndarray) -> tuple:
    """Precision and recall at each distinct score, highest score first.

    Args:
        positive: A bool per example.
        scores: A score per example.

    Returns:
        `(precision, recall)` arrays, one entry per distinct score, calling
        positive every example at or above it.
    """
    positive = np.asarray(positive, bool)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    ranked = np.asarray(scores, np.float64)[order]
    hits = np.cumsum(positive[order])
    # The last example of each run of equal scores: ties are called together.
    ends = np.append(np.flatnonzero(ranked[:-1] != ranked[1:]), len(ranked) - 1)
    called = ends + 1
    return hits[ends] / called, hits[ends] / max(int(positive.sum()), 1)


def average_precision(positive: np.ndarray, scores: np.ndarray) -> float:
    """A label's average precision: sum_n (R_n - R_(n-1)) P_n.

    Args:
        positive: A bool per example.
        scores: A score per example.

    Returns:
        A float in `[0, 1]`; 0 when there is no positive example.

    Example:
    >>> average_precision([True, False, True], [0.9, 0.8, 0.1])
    0.8333333333333333
    """
    positive = np.asarray(positive, bool)
    if not positive.any():
        return 0.0
    precision, recall = precision_recall_curve(positive, scores)
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def mean_average_precision(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
    """The mean average precision over the labels that have a positive example.

    Args:
        labels: Multi-hot labels, shape `[n, labels]`.
        scores: A score per example and label, the same shape.

    Returns:
        A float in `[0, 1]`, or `None` if no label has a positive example.

    Example:
    >>> mean_average_precision([[1, 0], [0, 1], [1, 1]],
    ...                        [[0.9, 0.1], [0.8, 0.7], [0.7, 0.2]])
    0.9166666666666666
    """
    truth = np.asarray(labels, np.float64) > 0.5
    scores = np.asarray(scores, np.float64)
    present = [j for j in range(truth.shape[1]) if truth[:, j].any()]
    if not present:
        return None
    return float(np.mean([average_precision(truth[:, j], scores[:, j]) for j in present]))
