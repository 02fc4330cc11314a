"""One way to run a model over a dataset: a traced call, labels and outputs in order."""

import keras
import numpy as np
import tensorflow as tf

from tftransfer.models.inference import inference, predictions


def test_predictions_keep_the_order_and_the_label_shapes():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).random((5, 2)).astype("float32")
    call = inference(model)
    labels, outputs = predictions(call, tf.data.Dataset.from_tensor_slices(
        (x, np.array([[0], [1], [2], [1], [0]]))).batch(2))
    assert labels.tolist() == [0, 1, 2, 1, 0]  # [n, 1] flattened.
    np.testing.assert_allclose(outputs, model(x).numpy(), rtol=1e-5)
    hot, _ = predictions(call, tf.data.Dataset.from_tensor_slices(
        (x, np.eye(3)[[0, 1, 2, 1, 0]])).batch(2))
    assert hot.shape == (5, 3)  # Multi-hot rows kept.
    model.set_weights([w * 0 for w in model.get_weights()])  # The same trace, new weights.
    _, uniform = predictions(call, tf.data.Dataset.from_tensor_slices((x, np.zeros(5))).batch(5))
    np.testing.assert_allclose(uniform, 1 / 3, rtol=1e-5)


def test_an_empty_dataset_gives_empty_arrays():
    labels, outputs = predictions(lambda x: x, tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 2)), np.zeros(0))).batch(2))
    assert len(labels) == 0 and len(outputs) == 0
