"""The loss of both phases: sparse cross-entropy with label smoothing."""

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
