import keras
import numpy as np

from tftransfer.losses import SparseCategoricalCrossentropy


def test_label_smoothing_loss():
    y_true = np.array([0, 1])
    y_pred = np.array([[0.9, 0.1], [0.2, 0.8]], "float32")
    plain = SparseCategoricalCrossentropy()(y_true, y_pred)
    reference = keras.losses.SparseCategoricalCrossentropy()(y_true, y_pred)
    np.testing.assert_allclose(plain, reference, rtol=1e-6)
    smoothed = SparseCategoricalCrossentropy(label_smoothing=0.2)(y_true, y_pred)
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)(
        np.eye(2)[y_true], y_pred)
    np.testing.assert_allclose(smoothed, expected, rtol=1e-6)
    assert float(smoothed) > float(plain)
