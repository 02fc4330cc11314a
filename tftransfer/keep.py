"""Which weights `fine_tune` keeps once the top phase has run: paired evidence.

On a few dozen validation images, the head phase's and the top phase's
accuracies are both near their ceiling and one image moves them by 2 or 3
points, so comparing the two figures cannot tell a top phase that helped
from one that memorised its training images. Comparing them image by image
can: only the images that one set of weights gets right and the other
wrong carry information (McNemar's test), and the same images' losses say
how sure each is.

Three candidates are scored on the same validation images: the head
phase's weights, the top phase's, and their average (WiSE-FT, Wortsman et
al., CVPR 2022), which interpolates between the pretrained features and the
fine-tuned ones and is, on average, at least as good as either without
costing a step of training. `choose_kept` picks among them
(`KEEP_RULE` says how, for the plan and the docs).
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

from tftransfer.phases import finite_or_inf, kept_epoch_logs

#: How `choose_kept` decides, in words.
KEEP_RULE = ("the average of the head and top phases' weights (WiSE-FT), unless on the "
             "same validation images the top phase's weights get at least "
             "{margin} more right than the average does (and a lower mean loss), or the "
             "head's do")
#: Paired wins (images one gets right and the other wrong, net) that a
#: candidate needs over the average to replace it.
MARGIN = 1


def average_weights(first: Sequence[np.ndarray], second: Sequence[np.ndarray],
                    alpha: float = 0.5) -> list:
    """`(1 - alpha) * first + alpha * second`, weight by weight.

    Args:
        first, second: Two lists of a model's weights (`get_weights()`).
        alpha: The share of `second`.

    Returns:
        The averaged list; non-float weights (counters, seeds) come from
        `second`.

    Example:
    >>> average_weights([np.array([0.0, 2.0])], [np.array([2.0, 4.0])])[0].tolist()
    [1.0, 3.0]
    """
    return [(1 - alpha) * a + alpha * b if np.issubdtype(np.asarray(b).dtype, np.floating)
            else b for a, b in zip(first, second)]


def paired_wins(labels: np.ndarray, first: np.ndarray, second: np.ndarray) -> tuple:
    """The images only `second` gets right, and those only `first` does.

    Args:
        labels: Integer labels, `[rows]`.
        first, second: Class probabilities, `[rows, classes]`.

    Returns:
        `(second_only, first_only)`, two counts.

    Example:
    >>> labels = np.array([0, 1, 1])
    >>> first = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]])
    >>> second = np.array([[0.9, 0.1], [0.3, 0.7], [0.4, 0.6]])
    >>> paired_wins(labels, first, second)
    (1, 0)
    """
    right_first = np.argmax(first, axis=1) == labels
    right_second = np.argmax(second, axis=1) == labels
    return int(np.sum(right_second & ~right_first)), int(np.sum(right_first & ~right_second))


def mean_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The mean cross-entropy of the true classes."""
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked, 1e-7)).mean())


def choose_kept(labels: np.ndarray, probabilities: dict, margin: int = MARGIN) -> tuple:
    """Chooses the weights to keep from paired validation results (`KEEP_RULE`).

    Args:
        labels: The validation images' integer labels.
        probabilities: `{"head": ..., "top": ..., "average": ...}`, each
            the class probabilities of those images under those weights.
        margin: The net paired wins a candidate needs over the average.

    Returns:
        `(name, reason)`: one of the keys, and a line for the log.
    """
    average = probabilities["average"]
    won, lost = paired_wins(labels, average, probabilities["top"])
    losses = {name: mean_loss(labels, p) for name, p in probabilities.items()}
    counts = f"{len(labels)} validation images"
    if won - lost >= margin and losses["top"] <= losses["average"]:
        return "top", (f"kept the top phase's weights: {won} images right that the average "
                       f"gets wrong, {lost} the other way, loss {losses['top']:.3f} against "
                       f"{losses['average']:.3f} ({counts})")
    won, lost = paired_wins(labels, average, probabilities["head"])
    if won - lost >= margin:
        return "head", (f"kept the head phase's weights: {won} images right that the "
                        f"average gets wrong, {lost} the other way ({counts})")
    return "average", (f"kept the average of the head and top phases' weights: neither "
                       f"phase's own weights did better on the same {counts} (loss "
                       f"{losses['average']:.3f}; head {losses['head']:.3f}, top "
                       f"{losses['top']:.3f})")


def top_lost(head, top, plan, monitor: str) -> bool:
    """Whether the top phase ended worse than the head, where paired scores cannot tell.

    A multi-label model compares the phases' validation average precision
    (mean over the labels); without validation data, their training loss.

    Args:
        head, top: The phases' Keras `History`.
        plan: The `Plan` they ran.
        monitor: The value early stopping watched (`"val_loss"` or `"loss"`).

    Returns:
        A bool.
    """
    first = kept_epoch_logs(head, plan.head.phase, monitor)
    second = kept_epoch_logs(top, plan.top.phase, monitor)
    ap = "val_average_precision"
    if plan.multi_label and ap in first and ap in second:
        return second[ap] < first[ap]
    return finite_or_inf(second.get(monitor)) > finite_or_inf(first.get(monitor))


def inference(model) -> tf.types.experimental.PolymorphicFunction:
    """`model(inputs, training=False)` as one traced function, for `predictions`."""
    return tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)


def predictions(call, dataset: tf.data.Dataset) -> tuple:
    """Runs `call` (an `inference`) over `(inputs, labels)` batches.

    Args:
        call: The traced model.
        dataset: `(inputs, labels)` batches.

    Returns:
        `(labels, probabilities)` as numpy arrays.
    """
    labels, probabilities = [], []
    for inputs, batch_labels in dataset:
        probabilities.append(call(inputs).numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(labels), np.concatenate(probabilities)
