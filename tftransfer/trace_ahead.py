"""Tracing a cached phase's training step while its inputs are extracted.

Keras traces a model's training step in the first epoch of `fit`. For a
head on cached features that trace is the largest cost after the
extraction itself: 0.7-1 s, against 50-100 ms for each later epoch over
2,000 rows on 2 cores (docs/benchmarks.md#feature-cache). The step's
input signature is known before the features are, so `fine_tune` traces
it in a thread while the base runs; `fit` then finds it traced.
"""

import logging
import threading

import keras
import tensorflow as tf

logger = logging.getLogger("tftransfer")


class TraceAhead:
    """Traces a compiled model's training (and test) step in a background thread.

    Use it as a context manager around the work that makes the data.
    Nothing is trained: each step function runs once on an empty iterator,
    which traces it and stops before the first step, so the weights, the
    optimizer's state and the metrics stay as they were. The model must
    not be compiled again before `fit`, which would drop the traces.

    Args:
        model: A `keras.Model` compiled with `steps_per_execution > 1`, on
            one replica.
        element_spec: The `(inputs, labels)` element spec that the batches
            given to `fit` will have, with a batch size of `None`.
        class_weight: As it will be given to `fit`, which then adds a
            sample weight to each batch (a different signature).
        validation: Also trace the test step, for validation batches of
            the same spec.
    """

    def __init__(self, model, element_spec, *, class_weight=None, validation=False):
        self.model = model
        self.element_spec = element_spec
        self.class_weight = class_weight
        self.validation = validation
        self.error = None
        # Keras keeps its global dtype policy per thread (mixed precision).
        self._policy = keras.config.dtype_policy()
        self._thread = threading.Thread(target=self._trace, name="tftransfer-trace-ahead",
                                        daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._thread.join()
        return False

    def traced_for(self, dataset):
        """Whether the steps were traced for batches like `dataset`'s.

        Args:
            dataset: The training data about to be given to `fit`.

        Returns:
            `True` if `fit` will reuse the traces, `False` if it will trace
            the steps again (the traces are then only wasted work).
        """
        return self.error is None and dataset.element_spec == self.element_spec

    def _trace(self):
        # Only speed is at stake, so a failure here is logged, not raised:
        # `fit` traces the step itself, and raises whatever is wrong then.
        if self.model.steps_per_execution < 2:
            # Keras's one-step function would count an optimizer step even
            # on an empty iterator; its multi-step loop runs no step at all.
            self.error = ValueError("tracing ahead needs steps_per_execution > 1")
            return
        try:
            keras.config.set_dtype_policy(self._policy)
            with self.model.distribute_strategy.scope():
                spec = self.element_spec
                if self.class_weight is not None:
                    spec = (*spec, tf.TensorSpec((None,), tf.float32))
                # As `fit` does first: the optimizer's and the metrics'
                # variables are made here, not inside the traced function,
                # where a second signature could not make them again. It is
                # Keras's private method (3.x); should it change, this fails
                # and is logged, and `fit` traces as usual.
                self.model._symbolic_build(data_batch=tf.nest.map_structure(
                    lambda s: keras.KerasTensor((1, *s.shape[1:]), s.dtype.name), spec))
                self.model.make_train_function()
                _run_on_nothing(self.model.train_function, spec)
                if self.validation:
                    self.model.make_test_function()
                    _run_on_nothing(self.model.test_function, self.element_spec)
        except Exception as error:  # noqa: BLE001
            self.error = error
            logger.debug("tracing the step ahead failed; fit traces it: %s", error)


def _run_on_nothing(function, spec):
    """Calls a Keras step function on an empty iterator of batches of `spec`."""
    empty = tf.nest.map_structure(lambda s: tf.zeros((0, *s.shape[1:]), s.dtype), spec)
    batches = tf.data.Dataset.from_tensor_slices(empty).batch(1)
    try:
        function(iter(batches))
    except (StopIteration, tf.errors.OutOfRangeError):
        pass  # The trace is done; there was no step to run.
