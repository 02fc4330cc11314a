"""How well the frozen features already separate the classes, from every labelled image.

Before the top phase, `fine_tune` asks whether it has anything to gain. On
a few dozen validation photos neither validation accuracy nor validation
loss can tell (one photo is 2 or 3 points), so the evidence pools the
training and validation images' cached features and measures, in seconds:

* the out-of-fold accuracy and log-loss of a linear softmax head (k folds,
  stratified; each image is scored by a head that did not see it);
* a leave-one-out k-nearest-neighbour accuracy (cosine similarity).

Both are cheap, and how well plain linear or kNN probes on frozen features
do is a better predictor of what fine-tuning adds than the published
transferability scores (LogME, LEEP, NCE, H-score). The decisions that read
the evidence are in `tftransfer.training.auto` (`top_phase_from_evidence`).
"""

import dataclasses
import math
import time
from typing import Optional

import numpy as np

#: Folds of the out-of-fold measure.
FOLDS = 5
#: Neighbours of the kNN measure.
NEIGHBOURS = 10
#: The linear head's weight decay and Adam steps: stronger decay than a head
#: fitted to keep, so that its out-of-fold log-loss is a calibrated figure
#: and its accuracy tracks the trained head's (docs/training.md).
L2 = 1e-2
STEPS = 100
#: Rows past which the measure uses a stratified sample, so that it stays a
#: few seconds on tens of thousands of images; its standard error says so.
MAX_ROWS = 6000


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What the frozen features show about a dataset, before the top phase.

    Attributes:
        rows: The images measured (training and validation pooled).
        folds: The folds of the out-of-fold measure.
        oof_accuracy: Out-of-fold accuracy of a linear softmax head.
        oof_accuracy_se: Its standard error, sqrt(p (1 - p) / rows).
        oof_log_loss: Out-of-fold mean log-loss of that head.
        knn_accuracy: Leave-one-out accuracy of `NEIGHBOURS` nearest neighbours.
        seconds: What the measure took.
    """

    rows: int
    folds: int
    oof_accuracy: float
    oof_accuracy_se: float
    oof_log_loss: float
    knn_accuracy: float
    seconds: float

    @property
    def headroom(self) -> float:
        """What the linear head misses out of fold: 1 - `oof_accuracy`."""
        return 1.0 - self.oof_accuracy

    def describe(self) -> str:
        """One line for the log and the plan."""
        return (f"out-of-fold accuracy {self.oof_accuracy:.3f} ± {self.oof_accuracy_se:.3f} "
                f"(log-loss {self.oof_log_loss:.3f}), kNN accuracy {self.knn_accuracy:.3f}, "
                f"on {self.rows} images in {self.seconds:.1f} s")

    def to_dict(self) -> dict:
        """The evidence as plain values, for JSON."""
        return {**dataclasses.asdict(self), "headroom": self.headroom}


def measure_evidence(features: np.ndarray, labels: np.ndarray, num_classes: int, *,
                     folds: int = FOLDS, seed: int = 0) -> Optional[Evidence]:
    """Measures how well frozen features separate the classes, out of fold.

    Args:
        features: `[rows, features]`, one row per image (no augmented views:
            they would put copies of a held-out image in the training folds).
        labels: Integer labels, `[rows]`.
        num_classes: The number of classes.
        folds: Folds of the out-of-fold measure (fewer when a class has
            fewer images).
        seed: Seeds the folds and the sample.

    Returns:
        An `Evidence`, or `None` when there are too few images (a class
        with fewer than 2).

    Example:
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat(np.arange(3), 20)
    >>> features = np.eye(3)[labels] * 4 + rng.normal(size=(60, 3))
    >>> evidence = measure_evidence(features, labels, 3)
    >>> evidence.oof_accuracy > 0.9, evidence.rows
    (True, 60)
    """
    start = time.perf_counter()
    features = np.asarray(features, np.float32).reshape(len(labels), -1)
    labels = np.asarray(labels, np.int64)
    rng = np.random.default_rng(seed)
    if len(labels) > MAX_ROWS:
        keep = np.sort(rng.choice(len(labels), MAX_ROWS, replace=False))
        features, labels = features[keep], labels[keep]
    counts = np.bincount(labels, minlength=num_classes)
    present = counts[counts > 0]
    if len(present) < 2 or present.min() < 2:
        return None
    folds = int(min(folds, present.min()))
    probabilities = out_of_fold_probabilities(features, labels, num_classes, folds, rng)
    right = probabilities.argmax(axis=1) == labels
    p = float(right.mean())
    picked = probabilities[np.arange(len(labels)), labels]
    return Evidence(rows=len(labels), folds=folds, oof_accuracy=p,
                    oof_accuracy_se=math.sqrt(p * (1 - p) / len(labels)),
                    oof_log_loss=float(-np.log(np.maximum(picked, 1e-7)).mean()),
                    knn_accuracy=knn_accuracy(features, labels, num_classes),
                    seconds=time.perf_counter() - start)


def stratified_folds(labels: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Each row's fold, with every class spread evenly over the folds.

    Example:
    >>> fold = stratified_folds(np.array([0, 0, 1, 1]), 2, np.random.default_rng(0))
    >>> sorted(fold[:2].tolist()), sorted(fold[2:].tolist())
    ([0, 1], [0, 1])
    """
    fold = np.empty(len(labels), np.int64)
    offset = 0
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        # Each class continues where the last left off, so small classes do
        # not all land in the first folds.
        fold[rows] = (np.arange(len(rows)) + offset) % folds
        offset += len(rows)
    return fold


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int,
                              folds: int, rng: np.random.Generator) -> np.ndarray:
    """Each row's class probabilities from a linear head fitted on the other folds.

    Args:
        features: `[rows, features]`.
        labels: Integer labels.
        num_classes: The number of classes.
        folds: The number of folds.
        rng: Draws the folds.

    Returns:
        `[rows, num_classes]` probabilities.
    """
    fold = stratified_folds(labels, folds, rng)
    probabilities = np.zeros((len(labels), num_classes), np.float32)
    for k in range(folds):
        held = fold == k
        head = softmax_regression(features[~held], labels[~held], num_classes, steps=STEPS,
                                  l2=L2)
        probabilities[held] = softmax_probabilities(head, features[held])
    return probabilities


def knn_accuracy(features: np.ndarray, labels: np.ndarray, num_classes: int,
                 neighbours: int = NEIGHBOURS) -> float:
    """Leave-one-out accuracy of a similarity-weighted vote of the nearest neighbours.

    Args:
        features: `[rows, features]`.
        labels: Integer labels.
        num_classes: The number of classes.
        neighbours: How many neighbours vote (fewer on a small set).

    Returns:
        The share of rows whose neighbours' vote is their label.
    """
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    k = max(1, min(neighbours, len(labels) - 1))
    right = 0
    for first in range(0, len(unit), 2048):
        sims = unit[first:first + 2048] @ unit.T
        sims[np.arange(len(sims)), np.arange(first, first + len(sims))] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        votes = np.zeros((len(sims), num_classes), np.float32)
        np.add.at(votes, (np.arange(len(sims))[:, None], labels[top]),
                  np.maximum(np.take_along_axis(sims, top, axis=1), 0))
        right += int((votes.argmax(axis=1) == labels[first:first + len(sims)]).sum())
    return right / len(labels)


def softmax_regression(x: np.ndarray, y: np.ndarray, classes: int, steps: int = 300,
                       rate: float = 0.05, l2: float = 1e-4):
    """A linear softmax head fitted by full-batch Adam in numpy, in well under a second.

    Args:
        x: `[rows, features]`.
        y: Integer labels.
        classes: The number of classes.
        steps, rate, l2: Adam's steps and rate, and the weight decay.

    Returns:
        `(mean, scale, weights, bias)` for `softmax_probabilities`.
    """
    x = np.asarray(x, np.float32)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    weights = np.zeros((z.shape[1], classes), np.float32)
    bias = np.zeros(classes, np.float32)
    target = np.eye(classes, dtype=np.float32)[y]
    moments = [np.zeros_like(weights), np.zeros_like(bias)] * 2
    for step in range(1, steps + 1):
        error = (_softmax(z @ weights + bias) - target) / len(z)
        grads = (z.T @ error + l2 * weights, error.sum(axis=0))
        for k, (param, grad) in enumerate(zip((weights, bias), grads)):
            moments[k] = 0.9 * moments[k] + 0.1 * grad
            moments[k + 2] = 0.999 * moments[k + 2] + 0.001 * grad ** 2
            param -= rate * (moments[k] / (1 - 0.9 ** step)) / (
                np.sqrt(moments[k + 2] / (1 - 0.999 ** step)) + 1e-8)
    return mean, scale, weights, bias


def softmax_probabilities(head, x: np.ndarray) -> np.ndarray:
    """Class probabilities of a `softmax_regression` head for rows `x`."""
    mean, scale, weights, bias = head
    return _softmax(((np.asarray(x, np.float32) - mean) / scale) @ weights + bias)


def _softmax(logits):
    # Clipped so that exp never returns a subnormal float32: every matrix
    # product that reads subnormals runs at a fraction of its speed.
    logits = np.maximum(logits - logits.max(axis=1, keepdims=True), -80.0)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)
