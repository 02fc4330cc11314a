"""Where training runs: `tf.distribute` strategies, mixed precision, and resumption.

The same `fine_tune` call trains on a laptop, a multi-GPU box, a TPU or a
cluster of workers; what changes is the strategy that the classifier is
built under:

    strategy = select_strategy("auto")           # TPU, GPUs, TF_CONFIG or one device
    select_precision("auto", strategy)            # mixed_float16 / mixed_bfloat16 / float32
    with strategy.scope():
        model = build_classifier(load_base(...), num_classes)
    train, val, names = image_folder(path, size, batch_size=global_batch_size(16, strategy))
    fine_tune(model, train, val, backup_dir="backups/run1")

Keras 3's `model.fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585), so `fit` here runs its own epoch loop there: one
training step through `strategy.run`, losses and metrics all-reduced across
workers, and the usual Keras callbacks (progress bar, `History`, early
stopping, TensorBoard) driven by a `CallbackList`. Every other strategy
uses `model.fit` itself.
"""

import glob
import json
import logging
import math
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tftransfer.errors import TransferError

logger = logging.getLogger("tftransfer")

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def select_strategy(name="auto"):
    """Returns the `tf.distribute.Strategy` to build and train under.

    `"auto"` picks, in order: a TPU when one is attached (Colab, a TPU VM,
    or `TPU_NAME`); `MultiWorkerMirroredStrategy` when `TF_CONFIG` names
    more than one worker; `MirroredStrategy` over more than one GPU; else
    the default strategy (one device).

    Call it at the start of the program: TPU and multi-worker strategies
    configure the TensorFlow runtime, which must happen before other ops run.

    Args:
        name: `"auto"`, `"default"` (one device), `"mirrored"` (all GPUs,
            else all logical CPUs), `"multi_worker"` (needs `TF_CONFIG`),
            `"tpu"`, or a `tf.distribute.Strategy` (returned as is).

    Returns:
        A `tf.distribute.Strategy`.

    Example:
    >>> strategy = select_strategy("auto")
    >>> strategy.num_replicas_in_sync
    1
    """
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name not in STRATEGIES:
        raise TransferError(f"unknown strategy {name!r}; choose one of "
                            f"{', '.join(STRATEGIES)}")
    if name == "auto":
        if _tpu_attached():
            name = "tpu"
        elif _cluster_workers() > 1:
            name = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    strategy = _BUILDERS[name]()
    logger.info("strategy: %s with %d replica(s) in sync", describe(strategy),
                strategy.num_replicas_in_sync)
    return strategy


def describe(strategy):
    """A strategy's public name, or "one device" for the default strategy."""
    if not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy():
        return "one device"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"  # Its class is CollectiveAllReduceStrategy.
    return type(strategy).__name__


def _default_strategy():
    return tf.distribute.get_strategy()


def _mirrored_strategy():
    gpus = tf.config.list_logical_devices("GPU")
    # Without GPUs, mirror over the logical CPUs, so that the same code path
    # can be exercised (and tested) on a CPU-only machine.
    devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def _multi_worker_strategy():
    if _cluster_workers() < 1:
        raise TransferError("the multi_worker strategy needs TF_CONFIG to name the "
                            "cluster and this worker's task, e.g. "
                            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                            '"task": {"type": "worker", "index": 0}}')
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _tpu_strategy():
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=os.environ.get("TPU_NAME", "local" if _tpu_vm() else None))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as error:
        raise TransferError(f"no TPU could be reached: {error}") from None
    return tf.distribute.TPUStrategy(resolver)


_BUILDERS = {
    "default": _default_strategy,
    "mirrored": _mirrored_strategy,
    "multi_worker": _multi_worker_strategy,
    "tpu": _tpu_strategy,
}


def _tpu_vm():
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _tpu_attached():
    # TPUClusterResolver() with no hint asks the GCE metadata server over the
    # network, so it is only tried where a TPU is announced.
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")
                or _tpu_vm())


def _cluster_workers():
    """The number of chief and worker tasks in `TF_CONFIG` (0 without it)."""
    config = _tf_config()
    cluster = config.get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def _tf_config():
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError as error:
        raise TransferError(f"TF_CONFIG is not valid JSON: {error}") from None


def is_multi_worker(strategy):
    """Whether `strategy` spans more than one worker process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
        return False
    spec = resolver.cluster_spec().as_dict()
    return len(spec.get("chief", [])) + len(spec.get("worker", [])) > 1


def is_chief(strategy=None):
    """Whether this process writes files (the chief, or worker 0 with no chief).

    Args:
        strategy: The strategy; default: the current one.

    Returns:
        `True` on a single machine.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    has_chief = bool(resolver.cluster_spec().as_dict().get("chief"))
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def select_precision(policy="auto", strategy=None, *, gpu_capabilities=None):
    """Chooses and sets Keras' global dtype policy.

    `"auto"` picks `mixed_bfloat16` on TPU, `mixed_float16` when every GPU
    has compute capability 7.0 or above (Volta and later have tensor
    cores; older GPUs gain little), else `float32`. Classifiers built
    afterwards compute in that precision, with their softmax in float32.

    Args:
        policy: `"auto"`, `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"`.
        strategy: The strategy to train under (default: the current one).
        gpu_capabilities: `(major, minor)` per GPU, to decide without asking
            the devices (default: read from the GPUs).

    Returns:
        The policy's name.

    Example:
    >>> select_precision("auto")   # on a CPU
    'float32'
    """
    if policy not in PRECISIONS:
        raise TransferError(f"unknown precision {policy!r}; choose one of "
                            f"{', '.join(PRECISIONS)}")
    if policy == "auto":
        policy = auto_precision(strategy, gpu_capabilities=gpu_capabilities)
    keras.mixed_precision.set_dtype_policy(policy)
    logger.info("precision: %s", policy)
    return policy


def auto_precision(strategy=None, *, gpu_capabilities=None):
    """Returns the dtype policy that `select_precision("auto")` would set."""
    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if gpu_capabilities is None:
        gpu_capabilities = [
            tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
            for gpu in tf.config.list_physical_devices("GPU")]
    if gpu_capabilities and all(tuple(c) >= (7, 0) for c in gpu_capabilities):
        return "mixed_float16"
    return "float32"


def global_batch_size(per_replica_batch_size, strategy=None):
    """Returns the global batch size for a per-replica batch size, and logs it.

    Datasets are batched at the global size; each step splits a batch
    across the replicas.

    Args:
        per_replica_batch_size: Images per replica per step.
        strategy: The strategy (default: the current one).

    Returns:
        `per_replica_batch_size * strategy.num_replicas_in_sync`.

    Example:
    >>> global_batch_size(16, select_strategy("mirrored"))   # 2 GPUs
    32
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    size = int(per_replica_batch_size) * replicas
    logger.info("batch: %d per replica x %d replica(s) = global batch %d",
                per_replica_batch_size, replicas, size)
    return size


def learning_rate_scale(replicas, rule="sqrt"):
    """Returns the factor by which a learning rate grows with the replicas.

    Rates are given for one replica's batch. With N replicas the global
    batch is N times larger; Adam's steps are then best scaled by sqrt(N)
    (Malladi et al., 2022), SGD's by N (Goyal et al., 2017).

    Args:
        replicas: The number of replicas in sync.
        rule: `"sqrt"`, `"linear"`, or `None` (no scaling).

    Returns:
        A float, 1.0 for one replica.
    """
    if rule is None or replicas <= 1:
        return 1.0
    if rule == "sqrt":
        return math.sqrt(replicas)
    if rule == "linear":
        return float(replicas)
    raise TransferError(f"learning_rate_scaling must be 'sqrt', 'linear' or None, "
                        f"got {rule!r}")


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
    """Returns `AutoShardPolicy.FILE` for file-reading datasets, else `DATA`."""
    graph = _graph_def(dataset)
    # Readers of several files sit in the functions of a flat_map.
    ops = {node.op for node in graph.node}
    ops.update(node.op for function in graph.library.function for node in function.node_def)
    if any(reader in op for op in ops for reader in _FILE_READERS):
        return tf.data.experimental.AutoShardPolicy.FILE
    return tf.data.experimental.AutoShardPolicy.DATA


def _graph_def(dataset):
    graph_def = tf.compat.v1.GraphDef()
    # The only way to see a dataset's source ops; tf.data itself uses it.
    graph_def.ParseFromString(dataset._as_serialized_graph().numpy())
    return graph_def


def fit(model, train, *, validation_data=None, epochs=1, initial_epoch=0, callbacks=None,
        class_weight=None, verbose="auto"):
    """Trains a compiled model under its strategy, as `model.fit` does.

    Under `MultiWorkerMirroredStrategy` this runs `train_loop` (Keras 3's
    `fit` fails there, keras-team/keras#20585); otherwise `model.fit`.

    Args:
        model: A compiled `keras.Model`, built under the strategy's scope.
        train: `(images, labels)` batches at the global batch size.
        validation_data: Batches for the `val_` metrics, or `None`.
        epochs: The index of the last epoch, as in `model.fit`.
        initial_epoch: The epoch to start at.
        callbacks: Keras callbacks.
        class_weight: `{label: weight}` or `None`.
        verbose: As in `model.fit`.

    Returns:
        A `keras.callbacks.History`.

    Example:
    >>> history = fit(model, train, validation_data=val, epochs=5)
    """
    if is_multi_worker(model.distribute_strategy):
        return train_loop(model, train, validation_data=validation_data, epochs=epochs,
                          initial_epoch=initial_epoch, callbacks=callbacks,
                          class_weight=class_weight, verbose=verbose)
    return model.fit(train, validation_data=validation_data, epochs=epochs,
                     initial_epoch=initial_epoch, callbacks=callbacks,
                     class_weight=class_weight, shuffle=False, verbose=verbose)


def evaluate(model, dataset):
    """Returns a compiled model's `{"loss": ..., "accuracy": ...}` on a dataset.

    Like `model.evaluate(dataset, return_dict=True)`, which also fails
    under `MultiWorkerMirroredStrategy`; there, the replicas' sums are
    all-reduced instead.

    Example:
    >>> evaluate(model, test)["accuracy"]
    0.93
    """
    strategy = model.distribute_strategy
    if not is_multi_worker(strategy):
        return model.evaluate(dataset, verbose=0, return_dict=True)
    return _run_over(_eval_step(model, strategy),
                     distribute_dataset(dataset, strategy)).logs()


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
        verbose=1 if verbose == "auto" else verbose, epochs=epochs,
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
    """Per-replica `[weighted loss, correct, examples, regularization]`."""
    predicted = tf.cast(tf.argmax(probabilities, axis=-1), labels.dtype)
    correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
    count = tf.cast(tf.size(labels), tf.float32)
    return tf.stack([tf.reduce_sum(per_example), correct, count, regularization])


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
    if class_weight:
        weights = tf.constant([float(class_weight.get(i, 1.0)) for i in range(num_classes)])

    def replica_step(images, labels):
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        count = tf.cast(tf.size(labels), tf.float32)
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

    def replica_step(images, labels):
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
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


def replace_atomically(path, write):
    """Writes a file through `write(staging_path)` and a rename into place.

    A reader (or a restart after a kill) sees the old file or the new one,
    never half of one.

    Args:
        path: The file's final `Path`.
        write: Writes the content to the path it is given.

    Example:
    >>> replace_atomically(Path("state.json"), lambda p: p.write_text("{}"))
    """
    # Same folder (so the rename stays on one filesystem) and same suffix
    # (np.savez would add ".npz" to any other name).
    staging = path.with_name(f".{path.stem}.{os.getpid()}{path.suffix}")
    write(staging)
    os.replace(staging, path)


class EpochBackup(keras.callbacks.Callback):
    """Backs up weights and optimizer state after every epoch, for resumption.

    Like `keras.callbacks.BackupAndRestore`, but safe with several workers:
    only the chief writes, each backup is written under a new name and
    then published by an atomic rename of its small index file, so a kill
    at any moment leaves the previous backup readable; every worker
    restores from the same files before training.

    Args:
        directory: The backup folder (shared by all workers).

    Example:
    >>> backup = EpochBackup("backups/run1/head")
    >>> start = backup.restore(model)       # 0 on a fresh run
    >>> model.fit(train, epochs=10, initial_epoch=start, callbacks=[backup])
    """

    INDEX = "latest.json"

    def __init__(self, directory):
        super().__init__()
        self.directory = Path(directory)

    def restore(self, model):
        """Loads the latest backup into a compiled model.

        Returns:
            The epoch to resume at (the number of epochs done), 0 if there
            is no backup.
        """
        try:
            index = json.loads((self.directory / self.INDEX).read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as error:
            raise TransferError(f"cannot read the backup index "
                                f"{self.directory / self.INDEX}: {error}") from None
        path = self.directory / index["weights"]
        with model.distribute_strategy.scope():
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(path)
        except (OSError, ValueError) as error:
            raise TransferError(
                f"the backup {path} does not fit this model ({error}); delete "
                f"{self.directory.parent} or choose another backup folder") from None
        return int(index["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        if not is_chief(self.model.distribute_strategy):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1}.weights.h5"
        self.model.save_weights(self.directory / name, overwrite=True)
        index = json.dumps({"epoch": epoch + 1, "weights": name})
        replace_atomically(self.directory / self.INDEX, lambda path: path.write_text(index))
        for old in self.directory.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)
