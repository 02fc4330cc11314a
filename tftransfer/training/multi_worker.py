"""Training across workers: an epoch loop for `MultiWorkerMirroredStrategy`.

Keras 3's `model.fit` and `evaluate` fail under that strategy
(keras-team/keras#20585). `train_loop` runs one training step through
`strategy.run`, with losses and metrics all-reduced across workers, and
drives the usual Keras callbacks (progress bar, `History`, early stopping,
TensorBoard) through a `CallbackList`. It works under any strategy, so it
is tested on one machine too.
"""

import keras
import numpy as np
import tensorflow as tf

from tftransfer.data.cache import serialized_graph
from tftransfer.errors import TransferError
from tftransfer.models.losses import BinaryCrossentropy
from tftransfer.progress import verbosity


def distribute_dataset(dataset, strategy):
    """Distributes batches across the replicas with the fitting shard policy.

    Datasets that read files themselves (TFRecord, text lines) are sharded
    by file, so that each worker reads only its files. Every other source
    (file *names* decoded by `map`, arrays in memory, cached features) is
    sharded by element, in a deterministic order, so that the workers
    split each batch without overlap.

    Args:
        dataset: Global batches.
        strategy: The strategy.

    Returns:
        A `tf.distribute.DistributedDataset`, or `dataset` itself with
        one replica.
    """
    if strategy.num_replicas_in_sync == 1:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = shard_policy(dataset)
    options.deterministic = True
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


_FILE_READERS = ("TFRecordDataset", "TextLineDataset", "FixedLengthRecordDataset")


def shard_policy(dataset):
    """Returns `AutoShardPolicy.FILE` for file-reading datasets, else `DATA`.

    `DATA` (each worker reads everything and keeps its share) is right for
    any dataset, so it is also the answer where the graph cannot be read.
    """
    serialized = serialized_graph(dataset)
    if serialized is None:
        return tf.data.experimental.AutoShardPolicy.DATA
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(serialized)
    # Readers of several files sit in the functions of a flat_map.
    ops = {node.op for node in graph.node}
    ops.update(node.op for function in graph.library.function for node in function.node_def)
    if any(reader in op for op in ops for reader in _FILE_READERS):
        return tf.data.experimental.AutoShardPolicy.FILE
    return tf.data.experimental.AutoShardPolicy.DATA


def train_loop(model, train, *, validation_data=None, epochs=1, initial_epoch=0,
               callbacks=None, class_weight=None, verbose="auto"):
    """An epoch loop over `strategy.run` steps that works under any strategy.

    Each replica computes its part of the batch's cross-entropy, divided
    by the global number of examples, so that the optimizer's all-reduced
    (summed) gradients are those of the global mean. Loss, accuracy and
    their `val_` versions are summed across replicas and workers, so every
    worker sees the same logs and early stopping stops them together.
    Keras callbacks receive the usual hooks and `logs`.

    Args:
        model: A model compiled with a sparse cross-entropy loss and built
            under the strategy's scope.
        train, validation_data, epochs, initial_epoch, callbacks,
        class_weight, verbose: As in `model.fit`.

    Returns:
        A `keras.callbacks.History`.
    """
    strategy = model.distribute_strategy
    if model.optimizer is None or getattr(model, "loss", None) is None:
        raise TransferError("compile the model (optimizer and loss) before training it")
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    train_step = _train_step(model, strategy, class_weight)
    eval_step = _eval_step(model, strategy) if validation_data is not None else None
    distributed_train = distribute_dataset(train, strategy)
    distributed_validation = (distribute_dataset(validation_data, strategy)
                              if validation_data is not None else None)
    steps = int(train.cardinality())
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbosity(verbose), epochs=epochs,
        steps=steps if steps > 0 else None)
    model.stop_training = False
    callback_list.on_train_begin()
    epoch_logs = {}
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        totals = _Totals()
        for step, batch in enumerate(distributed_train):
            callback_list.on_train_batch_begin(step)
            totals.add(train_step(batch))
            callback_list.on_train_batch_end(step, totals.logs())
        epoch_logs = totals.logs()
        if eval_step is not None:
            val = _run_over(eval_step, distributed_validation).logs()
            epoch_logs.update({f"val_{k}": v for k, v in val.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end(epoch_logs)
    return next(c for c in callback_list.callbacks
                if isinstance(c, keras.callbacks.History))


class _Totals:
    """Running sums of `[weighted loss, correct, examples, regularization]`."""

    def __init__(self):
        self.sums = np.zeros(4)
        self.steps = 0

    def add(self, step_sums):
        self.sums += step_sums.numpy()
        self.steps += 1

    def logs(self):
        loss, correct, count, regularization = self.sums
        count = max(count, 1.0)
        return {"loss": float(loss / count + regularization / max(self.steps, 1)),
                "accuracy": float(correct / count)}


def _per_example_loss(model):
    loss = model.loss
    if isinstance(loss, keras.losses.Loss):
        return loss.call  # Unreduced: one value per example.
    return keras.losses.get(loss)


def _step_sums(labels, probabilities, per_example, regularization):
    """Per-replica `[weighted loss, correct, examples, regularization]`.

    With multi-hot labels, "correct" counts each example's share of labels
    decided right at 0.5, as `keras.metrics.BinaryAccuracy` does.
    """
    if labels.shape.rank == 2:
        right = tf.equal(probabilities > 0.5, labels > 0.5)
        correct = tf.reduce_sum(tf.reduce_mean(tf.cast(right, tf.float32), axis=-1))
    else:
        predicted = tf.cast(tf.argmax(probabilities, axis=-1), labels.dtype)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
    count = tf.cast(tf.shape(labels)[0], tf.float32)
    return tf.stack([tf.reduce_sum(per_example), correct, count, regularization])


def _labels_of(model):
    """How a replica step reads its labels: multi-hot rows for a binary loss, else ints."""
    if isinstance(model.loss, BinaryCrossentropy):
        return lambda labels: tf.cast(labels, tf.float32)
    return lambda labels: tf.reshape(tf.cast(labels, tf.int32), [-1])


def _regularization(model, replicas):
    # Split across replicas, so that the summed gradients count it once.
    if not model.losses:
        return tf.constant(0.0)
    return tf.cast(tf.add_n(model.losses), tf.float32) / replicas


def _train_step(model, strategy, class_weight):
    loss_fn = _per_example_loss(model)
    optimizer = model.optimizer
    replicas = strategy.num_replicas_in_sync
    num_classes = int(model.output_shape[-1])
    weights = None
    read_labels = _labels_of(model)
    if class_weight:
        weights = tf.constant([float(class_weight.get(i, 1.0)) for i in range(num_classes)])

    def replica_step(images, labels):
        labels = read_labels(labels)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        # The global batch may split unevenly (the last one, or an empty
        # share), so divide by the true global count, not a constant.
        global_count = tf.distribute.get_replica_context().all_reduce("sum", count)
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            per_example = tf.cast(loss_fn(labels, probabilities), tf.float32)
            if weights is not None:
                per_example *= tf.gather(weights, labels)
            regularization = _regularization(model, replicas)
            loss = tf.reduce_sum(per_example) / tf.maximum(global_count, 1.0) + regularization
            if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
                loss = optimizer.scale_loss(loss)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return _step_sums(labels, probabilities, per_example, regularization)

    return _summed_over_replicas(replica_step, strategy)


def _eval_step(model, strategy):
    loss_fn = _per_example_loss(model)
    replicas = strategy.num_replicas_in_sync
    read_labels = _labels_of(model)

    def replica_step(images, labels):
        labels = read_labels(labels)
        probabilities = model(images, training=False)
        per_example = tf.cast(loss_fn(labels, probabilities), tf.float32)
        return _step_sums(labels, probabilities, per_example,
                          _regularization(model, replicas))

    return _summed_over_replicas(replica_step, strategy)


def _summed_over_replicas(replica_step, strategy):
    """A compiled step: `replica_step` on each replica's share, sums all-reduced."""

    @tf.function(reduce_retracing=True)  # The last batch is often smaller.
    def step(batch):
        sums = strategy.run(replica_step, args=tuple(batch))
        return strategy.reduce("SUM", sums, axis=None)

    return step


def _run_over(step, distributed_dataset):
    """Runs `step` on every batch; returns the `_Totals`."""
    totals = _Totals()
    for batch in distributed_dataset:
        totals.add(step(batch))
    return totals


def evaluate_loop(model, dataset):
    """Returns `{"loss": ..., "accuracy": ...}` of a compiled model, summed over workers."""
    strategy = model.distribute_strategy
    return _run_over(_eval_step(model, strategy), distribute_dataset(dataset, strategy)).logs()
