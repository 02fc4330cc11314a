"""Where training runs: `tf.distribute` strategies, mixed precision, `fit` under them.

The same `fine_tune` call trains on a laptop, a multi-GPU box, a TPU or a
cluster of workers; what changes is the strategy that the classifier is
built under:

    strategy = select_strategy("auto")           # TPU, GPUs, TF_CONFIG or one device
    select_precision("auto", strategy)            # mixed_float16 / mixed_bfloat16 / float32
    with strategy.scope():
        model = build_classifier(load_base(...), num_classes)
    train, val, names = image_folder(path, size, batch_size=global_batch_size(16, strategy))
    fine_tune(model, train, val, options=RunOptions(backup_dir="backups/run1"))

Keras 3's `model.fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585), so `fit` here runs `multi_worker.train_loop`
there; every other strategy uses `model.fit` itself.
"""

import glob
import json
import logging
import math
import os
from typing import Optional, Sequence, Union

import keras
import tensorflow as tf

from tftransfer.defaults import PRECISIONS, STRATEGIES
from tftransfer.errors import TransferError
from tftransfer.training import multi_worker

logger = logging.getLogger("tftransfer")



def select_strategy(name: str = "auto") -> tf.distribute.Strategy:
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


def describe(strategy: tf.distribute.Strategy) -> str:
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


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` spans more than one worker process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
        return False
    spec = resolver.cluster_spec().as_dict()
    return len(spec.get("chief", [])) + len(spec.get("worker", [])) > 1


def is_chief(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
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


def select_precision(policy: str = "auto", strategy: Optional[tf.distribute.Strategy] = None,
                     *, gpu_capabilities: Optional[Sequence[tuple]] = None) -> str:
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


def auto_precision(strategy: Optional[tf.distribute.Strategy] = None, *,
                   gpu_capabilities: Optional[Sequence[tuple]] = None) -> str:
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


def global_batch_size(per_replica_batch_size: int,
                      strategy: Optional[tf.distribute.Strategy] = None) -> int:
    """Returns the global batch size for a per-replica batch size, and logs it.

    Datasets are batched at the global size; each step splits a batch
    across the replicas.

    Args:
        per_replica_batch_size: Images per replica per step.
        strategy: The strategy (default: the current one).

    Returns:
        `per_replica_batch_size * strategy.num_replicas_in_sync`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    size = int(per_replica_batch_size) * replicas
    logger.info("batch: %d per replica x %d replica(s) = global batch %d",
                per_replica_batch_size, replicas, size)
    return size


def learning_rate_scale(replicas: int, rule: Optional[str] = "sqrt") -> float:
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


def fit(model: keras.Model, train: tf.data.Dataset, *,
        validation_data: Optional[tf.data.Dataset] = None, epochs: int = 1,
        initial_epoch: int = 0, callbacks: Optional[list] = None,
        class_weight: Optional[dict] = None,
        verbose: Union[str, int] = "auto") -> keras.callbacks.History:
    """Trains a compiled model under its strategy, as `model.fit` does.

    Under `MultiWorkerMirroredStrategy` this runs `multi_worker.train_loop` (Keras 3's
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
    """
    if is_multi_worker(model.distribute_strategy):
        return multi_worker.train_loop(
            model, train, validation_data=validation_data, epochs=epochs,
            initial_epoch=initial_epoch, callbacks=callbacks, class_weight=class_weight,
            verbose=verbose)
    return model.fit(train, validation_data=validation_data, epochs=epochs,
                     initial_epoch=initial_epoch, callbacks=callbacks,
                     class_weight=class_weight, shuffle=False, verbose=verbose)


def evaluate(model: keras.Model, dataset: tf.data.Dataset) -> dict:
    """Returns a compiled model's `{"loss": ..., "accuracy": ...}` on a dataset.

    Like `model.evaluate(dataset, return_dict=True)`, which also fails
    under `MultiWorkerMirroredStrategy`; there, the replicas' sums are
    all-reduced instead.
    """
    if not is_multi_worker(model.distribute_strategy):
        return model.evaluate(dataset, verbose=0, return_dict=True)
    return multi_worker.evaluate_loop(model, dataset)
