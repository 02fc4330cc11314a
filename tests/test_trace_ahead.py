import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from tftransfer.trace_ahead import TraceAhead
from tftransfer.training import SparseCategoricalCrossentropy

WEIGHTS = {0: 1.0, 1: 2.0, 2: 0.5}


def rows(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 6)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")


def batches():
    return tf.data.Dataset.from_tensor_slices(rows()).batch(16)


def compiled_model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-2), SparseCategoricalCrossentropy(),
                  metrics=["accuracy"], steps_per_execution=4)
    return model


def count_traces(model):
    """Records the thread of every trace of the model's train and test steps."""
    traces = []
    for name in ("train_step", "test_step"):
        step = getattr(model, name)

        def counted(data, step=step, name=name):
            traces.append((name, threading.current_thread().name))
            return step(data)

        setattr(model, name, counted)
    return traces


@pytest.mark.parametrize("class_weight", [None, WEIGHTS])
def test_fit_reuses_the_steps_traced_ahead_and_trains_as_without(class_weight):
    plain = compiled_model()
    plain.fit(batches(), validation_data=batches(), epochs=3, class_weight=class_weight,
              verbose=0)

    model = compiled_model()
    traces = count_traces(model)
    before = [w.numpy().copy() for w in model.weights]
    with TraceAhead(model, batches().element_spec, class_weight=class_weight,
                    validation=True) as ahead:
        pass
    assert ahead.error is None
    assert {name for name, _ in traces} == {"train_step", "test_step"}
    assert all(thread == "tftransfer-trace-ahead" for _, thread in traces)
    # Tracing ran no step: no weight, metric or optimizer state moved.
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))
    assert int(model.optimizer.iterations) == 0
    assert ahead.traced_for(batches())

    count = len(traces)
    model.fit(batches(), validation_data=batches(), epochs=3, class_weight=class_weight,
              verbose=0)
    assert len(traces) == count  # fit traced nothing again.
    for a, b in zip(plain.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_different_signature_is_traced_again_by_fit():
    model = compiled_model()
    traces = count_traces(model)
    wider = (tf.TensorSpec((None, 7), tf.float32), tf.TensorSpec((None,), tf.int32))
    with TraceAhead(model, wider) as ahead:
        pass
    assert not ahead.traced_for(batches())
    count = len(traces)
    model.fit(batches(), epochs=1, verbose=0)
    assert len(traces) > count


def test_a_failed_trace_is_kept_not_raised():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])  # Not compiled.
    with TraceAhead(model, batches().element_spec) as ahead:
        pass
    assert ahead.error is not None
    assert not ahead.traced_for(batches())


def test_the_trace_follows_the_callers_mixed_precision_policy():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = compiled_model()
        traces = count_traces(model)
        with TraceAhead(model, batches().element_spec) as ahead:
            pass
        count = len(traces)
        model.fit(batches(), epochs=1, verbose=0)
    finally:
        keras.config.set_dtype_policy("float32")
    assert ahead.error is None and count == len(traces) > 0
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_one_step_per_call_is_not_traced_ahead():
    # Keras's one-step function counts an optimizer step even on no data.
    model = compiled_model()
    model.compile(keras.optimizers.Adam(1e-2), SparseCategoricalCrossentropy(),
                  steps_per_execution=1)
    with TraceAhead(model, batches().element_spec) as ahead:
        pass
    assert "steps_per_execution" in str(ahead.error)
    assert not ahead.traced_for(batches())
    assert not model.optimizer.built
