"""The one loader of exports: SavedModel folders and .tflite files, and their errors."""

import numpy as np
import pytest
import tensorflow as tf

from tftransfer.errors import TransferError
from tftransfer.export.exported import load_exported


@pytest.fixture(scope="module")
def jpeg():
    pixels = np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)
    return tf.io.encode_jpeg(pixels).numpy()


def test_a_saved_model_answers_images_and_files_alike(multi_label_export, jpeg):
    _, folder = multi_label_export
    model = load_exported(folder)  # The base path: its latest version is read.
    assert model.path == folder / "1" and model.class_names == ["blue", "green", "red"]
    assert model.multi_label and model.thresholds.tolist() == pytest.approx([0.45, 0.5, 0.55])
    image = tf.image.resize(tf.io.decode_jpeg(jpeg), model.input_size).numpy()[None]
    from_file, from_pixels = model.predict_files([jpeg]), model.predict_images(image)
    assert from_file.shape == (1, 3)
    np.testing.assert_allclose(from_file, from_pixels, atol=0.05)


def test_what_is_not_an_export_is_named(tmp_path):
    with pytest.raises(TransferError, match="neither an export folder nor a .tflite"):
        load_exported(tmp_path / "model.h5")
    with pytest.raises(TransferError, match="no SavedModel found"):
        load_exported(tmp_path)

    class Plain(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2])])
        def serve(self, x):
            return {"y": x}

    module = Plain()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
    with pytest.raises(TransferError, match="did not export \\(no serving_images signature"):
        load_exported(tmp_path)
