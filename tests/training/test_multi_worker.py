"""The epoch loop used under MultiWorkerMirroredStrategy, tested on one device.

The multi-worker runs themselves, in subprocesses, are in test_distribute.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tftransfer.training import multi_worker

from conftest import tiny_dense_dataset, tiny_dense_model


def test_shard_policy_fits_the_source(tmp_path):
    path = str(tmp_path / "data.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(b"x")
    policy = tf.data.experimental.AutoShardPolicy
    assert multi_worker.shard_policy(tf.data.TFRecordDataset([path]).batch(2)) == policy.FILE
    in_memory = tf.data.Dataset.from_tensor_slices(np.zeros((4, 2))).batch(2)
    assert multi_worker.shard_policy(in_memory) == policy.DATA


def test_shard_policy_is_data_where_the_graph_cannot_be_read(tmp_path, monkeypatch):
    path = str(tmp_path / "data.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(b"x")
    monkeypatch.setattr(multi_worker, "serialized_graph", lambda dataset: None)
    policy = tf.data.experimental.AutoShardPolicy
    assert multi_worker.shard_policy(tf.data.TFRecordDataset([path])) == policy.DATA


def test_train_loop_matches_model_fit():
    data = tiny_dense_dataset()
    weights = {0: 1.0, 1: 0.5, 2: 2.0}
    by_fit, by_loop = tiny_dense_model(), tiny_dense_model()
    fit_history = by_fit.fit(data, validation_data=data, epochs=3, class_weight=weights,
                             verbose=0)
    loop_history = multi_worker.train_loop(by_loop, data, validation_data=data, epochs=3,
                                           class_weight=weights, verbose=0)
    for a, b in zip(by_fit.get_weights(), by_loop.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for key in ["val_loss", "val_accuracy", "accuracy"]:
        np.testing.assert_allclose(fit_history.history[key], loop_history.history[key],
                                   atol=1e-5, err_msg=key)
    assert multi_worker.evaluate_loop(by_loop, data)["accuracy"] == pytest.approx(
        loop_history.history["val_accuracy"][-1])


def test_train_loop_writes_tensorboard_logs(tmp_path):
    multi_worker.train_loop(tiny_dense_model(), tiny_dense_dataset(),
                            validation_data=tiny_dense_dataset(), epochs=2, verbose=0,
                            callbacks=[keras.callbacks.TensorBoard(str(tmp_path))])
    for split in ("train", "validation"):
        assert list((tmp_path / split).glob("events.out.tfevents.*")), split


def test_train_loop_drives_keras_callbacks():
    model = tiny_dense_model()
    stop = keras.callbacks.EarlyStopping("loss", patience=0, min_delta=10.0)
    seen = []
    history = multi_worker.train_loop(
        model, tiny_dense_dataset(), epochs=10, initial_epoch=2, verbose=0,
        callbacks=[stop, keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: seen.append((epoch, sorted(logs))))])
    assert seen == [(2, ["accuracy", "loss"]), (3, ["accuracy", "loss"])]
    assert history.epoch == [2, 3]  # Stopped early: no epoch beat the first by 10.


def test_train_loop_matches_model_fit_on_multi_hot_labels():
    from tftransfer.models.losses import BinaryCrossentropy

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype("float32")
    hot = (x[:, :3] > 0).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, hot)).batch(16)

    def model():
        keras.utils.set_random_seed(3)
        built = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, "sigmoid")])
        built.compile(keras.optimizers.Adam(1e-2), BinaryCrossentropy([1.0, 2.0, 1.0]),
                      metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])
        return built

    by_fit, by_loop = model(), model()
    fit_history = by_fit.fit(data, validation_data=data, epochs=3, verbose=0)
    loop_history = multi_worker.train_loop(by_loop, data, validation_data=data, epochs=3,
                                           verbose=0)
    for a, b in zip(by_fit.get_weights(), by_loop.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for key in ["val_loss", "val_accuracy", "accuracy", "loss"]:
        np.testing.assert_allclose(fit_history.history[key], loop_history.history[key],
                                   atol=1e-5, err_msg=key)
