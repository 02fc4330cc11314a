import keras
import numpy as np

from tftransfer.models.losses import SparseCategoricalCrossentropy


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


def test_binary_crossentropy_matches_keras_and_weighs_positives():
    from tftransfer.models.losses import BinaryCrossentropy

    y_true = np.array([[1, 0, 0], [0, 1, 1]], "float32")
    y_pred = np.array([[0.8, 0.3, 0.1], [0.4, 0.6, 0.9]], "float32")
    reference = keras.losses.BinaryCrossentropy()(y_true, y_pred)
    np.testing.assert_allclose(BinaryCrossentropy()(y_true, y_pred), reference, rtol=1e-5)
    # Label 2's positive (0.9, only in row 1) weighs 3: row 1 gains 2 * -log(0.9) / 3.
    weighted = BinaryCrossentropy(positive_weights=[1.0, 1.0, 3.0])(y_true, y_pred)
    np.testing.assert_allclose(float(weighted) - float(reference),
                               2 * -np.log(0.9) / 3 / 2, rtol=1e-5)
    smoothed = BinaryCrossentropy(label_smoothing=0.2)(y_true, y_pred)
    np.testing.assert_allclose(
        smoothed, keras.losses.BinaryCrossentropy(label_smoothing=0.2)(y_true, y_pred),
        rtol=1e-5)
    config = BinaryCrossentropy([1.0, 2.0], 0.1).get_config()
    assert config["positive_weights"] == [1.0, 2.0] and config["label_smoothing"] == 0.1
