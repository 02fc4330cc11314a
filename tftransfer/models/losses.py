"""The losses of both phases: sparse cross-entropy, and binary cross-entropy for multi-label."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tftransfer")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels, with optional label smoothing.

    Keras' own sparse cross-entropy has no `label_smoothing`; this one
    one-hot encodes the labels first when smoothing is asked for.

    Args:
        label_smoothing: In `[0, 1)`; 0.1 is a common choice.
    """

    def __init__(self, label_smoothing=0.0, name="sparse_categorical_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="tftransfer")
class BinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy on multi-hot labels, with positives weighted per label.

    The multi-label analogue of class weights (`multi_label.positive_weights`):
    a positive of label j weighs `positive_weights[j]`, a negative 1. The
    per-example loss is the mean over the labels.

    Args:
        positive_weights: One weight per label, or `None` for all 1.
        label_smoothing: In `[0, 1)`: the labels move towards 0.5 by it.
    """

    def __init__(self, positive_weights=None, label_smoothing=0.0,
                 name="binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weights = (None if positive_weights is None
                                 else [float(w) for w in positive_weights])
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        y_true = ops.cast(ops.reshape(y_true, ops.shape(y_pred)), y_pred.dtype)
        if self.label_smoothing:
            y_true = y_true * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        positive = y_true * ops.log(y_pred)
        if self.positive_weights is not None:
            positive = positive * ops.convert_to_tensor(self.positive_weights, y_pred.dtype)
        return -ops.mean(positive + (1.0 - y_true) * ops.log(1.0 - y_pred), axis=-1)

    def get_config(self):
        return {**super().get_config(), "positive_weights": self.positive_weights,
                "label_smoothing": self.label_smoothing}


def loss_and_metrics(multi_label: bool, weights=None, label_smoothing: float = 0.0) -> tuple:
    """The loss and the epoch metrics of a classifier, for `compile`.

    Args:
        multi_label: Multi-hot labels and a sigmoid head (see `build_classifier`).
        weights: For multi-label, each label's positive weight (see
            `BinaryCrossentropy`); ignored otherwise, where Keras's
            `class_weight` does the weighing.
        label_smoothing: As in the losses.

    Returns:
        `(loss, metrics)`, with new metric objects at each call: `accuracy`,
        and for multi-label (decided at 0.5) also `average_precision`, the
        mean over the labels of the area under their precision-recall curves.
    """
    if not multi_label:
        return SparseCategoricalCrossentropy(label_smoothing), ["accuracy"]
    return (BinaryCrossentropy(weights, label_smoothing),
            [keras.metrics.BinaryAccuracy(name="accuracy"),
             keras.metrics.AUC(curve="PR", multi_label=True, name="average_precision")])
