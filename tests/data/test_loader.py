
import numpy as np
import tensorflow as tf

import tftransfer

from conftest import (labels_of, write_image_folder)


def test_image_folder_splits_stratified_and_seeded(image_folder_path):
    data = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=4,
                                   validation_split=0.25, seed=3)
    train, validation, class_names = data
    assert class_names == ["blue", "green", "red"]
    assert sorted(np.bincount(labels_of(validation))) == [2, 2, 2]
    assert sorted(np.bincount(labels_of(train))) == [6, 6, 6]
    images, labels = next(iter(train))
    assert train.cardinality() == 5 and validation.cardinality() == 2
    assert images.dtype == tf.float32 and images.shape == (4, 32, 32, 3)
    assert labels.dtype == tf.int32
    assert 0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255
    again = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=4,
                                    validation_split=0.25, seed=3)
    np.testing.assert_array_equal(
        np.concatenate([x.numpy() for x, _ in validation]),
        np.concatenate([x.numpy() for x, _ in again.validation]))


def test_image_folder_reads_train_val_test_folders(split_folder_path):
    data = tftransfer.image_folder(split_folder_path, (24, 24), batch_size=5)
    assert data.class_names == ["blue", "green", "red"]
    assert len(labels_of(data.train)) == 18
    assert len(labels_of(data.validation)) == 9
    assert len(labels_of(data.test)) == 9
    identities = data.identities()
    assert {name: i.rows for name, i in identities.items()} == {
        "train": 18, "validation": 9, "test": 9}
    assert list(identities["train"].counts) == [6, 6, 6]


def test_train_split_is_reshuffled_each_epoch(image_folder_path):
    train = tftransfer.image_folder(image_folder_path, (16, 16), batch_size=24,
                                    validation_split=0).train
    first, second = labels_of(train), labels_of(train)
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


def test_cached_order_is_fixed_so_workers_shard_the_same_sequence(tmp_path):
    root = write_image_folder(tmp_path / "data", 10)
    options = tf.data.Options()
    options.deterministic = True  # As `distribute_dataset` sets it.
    epochs = [labels_of(tftransfer.image_folder(root, (16, 16), validation_split=0,
                                                seed=5).train.with_options(options))
              for _ in range(3)]
    np.testing.assert_array_equal(epochs[0], epochs[1])
    np.testing.assert_array_equal(epochs[0], epochs[2])
