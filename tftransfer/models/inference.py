"""Running a model over a dataset: one traced call, and the labels and outputs it gives.

The keep rule, the thresholds, the evaluation and the TFLite check all score
a model the same way: its outputs on every batch of `(inputs, labels)`,
gathered with the labels in the dataset's order.
"""

from typing import Callable

import numpy as np
import tensorflow as tf


def inference(model) -> tf.types.experimental.PolymorphicFunction:
    """`model(inputs, training=False)` as one traced function.

    A plain call, not `predict`: under a strategy, `predict` splits the batch
    across replicas and, with several workers, is collective.

    Args:
        model: A Keras model.

    Returns:
        The traced call; a new weight value needs no new trace.
    """
    return tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)


def predictions(predict: Callable, dataset: tf.data.Dataset) -> tuple:
    """Runs `predict` over every batch of `(inputs, labels)`.

    Args:
        predict: Maps a batch of inputs to outputs (an `inference`, a TFLite
            classifier's `predict`, ...).
        dataset: `(inputs, labels)` batches.

    Returns:
        `(labels, outputs)` as numpy arrays, in the dataset's order. Labels
        of shape `[n, 1]` are flattened to `[n]`; multi-hot rows are kept.

    Example:
    >>> data = tf.data.Dataset.from_tensor_slices(([[1.0], [2.0], [3.0]], [0, 1, 1])).batch(2)
    >>> labels, outputs = predictions(lambda x: x * 10, data)
    >>> labels.tolist(), outputs.ravel().tolist()
    ([0, 1, 1], [10.0, 20.0, 30.0])
    """
    labels, outputs = [], []
    for inputs, batch_labels in dataset:
        outputs.append(np.asarray(predict(inputs)))
        batch_labels = np.asarray(batch_labels)
        labels.append(batch_labels.reshape(-1) if batch_labels.ndim == 2
                      and batch_labels.shape[1] == 1 else batch_labels)
    if not outputs:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return np.concatenate(labels), np.concatenate(outputs)
