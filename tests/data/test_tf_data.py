
import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer

from conftest import (labels_of)


def test_tf_data_source_is_resized_and_split():
    images = np.random.default_rng(0).uniform(0, 255, (12, 20, 20, 1)).astype("float32")
    labels = np.array([0, 1, 2] * 4)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(5)
    data = tftransfer.data.load_data(ds, (8, 8), class_names=["a", "b", "c"],
                                     validation_split=0.25, batch_size=4)
    assert sorted(np.bincount(labels_of(data.validation))) == [1, 1, 1]
    assert len(labels_of(data.train)) == 9
    assert next(iter(data.train))[0].shape[1:] == (8, 8, 3)
    # Known lengths, for progress bars and the fine-tuning schedule.
    assert data.train.cardinality() == 3 and data.validation.cardinality() == 1


def unknown_length_pairs(count, calls):
    """`count` 8x8 images of unknown length; `calls` grows by one per image made."""
    images = np.random.default_rng(0).integers(0, 255, (count, 8, 8, 3), dtype=np.uint8)

    def touched(image, label):
        image = tf.numpy_function(lambda x: (calls.append(1), x)[1], [image], tf.uint8)
        image.set_shape((8, 8, 3))
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(count) % 2))
    return ds.filter(lambda image, label: True).map(touched)


@pytest.mark.parametrize("validation_split", [0, 0.2])
def test_tf_data_sources_of_unknown_length_are_counted_by_the_pass_that_fills_the_cache(
        validation_split):
    calls = []
    ds = unknown_length_pairs(10, calls)
    assert ds.cardinality() == tf.data.UNKNOWN_CARDINALITY
    data = tftransfer.load_data(ds, (8, 8), class_names=["a", "b"], batch_size=4,
                                validation_split=validation_split)
    train_images = 8 if validation_split else 10
    assert data.train.cardinality() == -(-train_images // 4)
    for _ in range(2):
        assert len(labels_of(data.train)) == train_images
    if validation_split:
        assert data.validation.cardinality() == 1 and len(labels_of(data.validation)) == 2
    assert len(calls) == 10  # Each image made once; the epochs read the cache.


def test_keras_counts_the_steps_it_runs_on_a_source_of_unknown_length():
    # Keras 3.15 counts one step more per epoch on a dataset of unknown length.
    data = tftransfer.load_data(unknown_length_pairs(10, []), (8, 8),
                                class_names=["a", "b"], batch_size=4)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data.train, epochs=2, verbose=0, shuffle=False)
    assert int(model.optimizer.iterations) == 2 * 3


def test_a_tf_data_source_that_repeats_forever_is_an_error():
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((2, 8, 8, 3), np.uint8), [0, 1]))
    with pytest.raises(tftransfer.TransferError, match="training dataset repeats forever"):
        # With a split, it would never get past the pass over the labels.
        tftransfer.load_data(ds.repeat(), (8, 8), class_names=["a", "b"],
                             validation_split=0.5)
    with pytest.raises(tftransfer.TransferError, match="validation dataset repeats"):
        tftransfer.data.dataset_source(ds, (8, 8), ["a", "b"], validation=ds.repeat())


def test_tfds_source_offline_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=20):
        data = tftransfer.data.load_data("tfds:tf_flowers", (32, 32), batch_size=4,
                                         validation_split=0.25)
        assert data.class_names == ["dandelion", "daisy", "tulips", "sunflowers", "roses"]
        train, validation = labels_of(data.train), labels_of(data.validation)
    assert len(train) + len(validation) == 20 and 3 <= len(validation) <= 7
    images, _ = next(iter(data.train))
    assert images.shape == (4, 32, 32, 3)


def test_tfds_image_folder_source(split_folder_path):
    data = tftransfer.data.load_data(f"imagefolder:{split_folder_path}", (16, 16),
                                     batch_size=4)
    assert data.class_names == ["blue", "green", "red"]
    assert len(labels_of(data.train)) == 18 and len(labels_of(data.validation)) == 9
