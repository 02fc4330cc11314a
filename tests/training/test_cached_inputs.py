import logging

import numpy as np
import tensorflow as tf

import tftransfer
from tftransfer.training import cached_inputs
from tftransfer.training.plan import plan_fine_tune


def unshuffled(count=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (count, size, size, 3)).astype("float32")
    labels = np.arange(count) % 3
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    return ds


def test_both_phases_share_one_pass_of_the_base(tiny_base, tmp_path, caplog):
    model = tftransfer.build_classifier(tiny_base, 3, dropout=0.0, augmentation=None)
    train, validation = unshuffled(), unshuffled(6, seed=1)
    images = np.concatenate([x for x, _ in train.as_numpy_iterator()])
    expected = model.get_layer("features").predict(images, verbose=0)  # Before training.
    with caplog.at_level(logging.INFO, logger="tftransfer"):
        history = tftransfer.fine_tune(
            model, train, validation, head=tftransfer.Phase.head(epochs=1),
            top=tftransfer.Phase.top(epochs=1, unfreeze=3), refit=False,
            options=tftransfer.RunOptions(feature_cache=tmp_path), verbose=0)
    assert "the head's features from the activations" in caplog.text
    # The base's bottom ran once for each split; phase 2 reused both entries.
    assert caplog.text.count("feature cache: reusing") == 2
    entry, manifest = history.head_cache["path"], history.head_cache
    rows = np.concatenate([np.load(f"{entry}/{names[0]}") for names in manifest["shards"]])
    # The same layers in two models: only float rounding may differ.
    np.testing.assert_allclose(rows, expected, rtol=1e-5, atol=1e-5)
    assert history.top_cache["path"] != entry


def test_without_phase_two_the_features_come_from_the_whole_base(tiny_base, tmp_path, caplog):
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    with caplog.at_level(logging.INFO, logger="tftransfer"):
        tftransfer.fine_tune(model, unshuffled(), None, head=tftransfer.Phase.head(epochs=1),
                             top=tftransfer.Phase.top(epochs=0),
                             options=tftransfer.RunOptions(feature_cache=tmp_path), verbose=0)
    assert "from the activations" not in caplog.text
    assert caplog.text.count("extracting features") == 1


def test_cached_batches_carry_every_crossing_tensor_and_the_labels_dtype(tiny_base, tmp_path):
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    train = unshuffled()
    plan = plan_fine_tune(model, train, top=tftransfer.Phase.top(unfreeze=3), refit=False,
                          options=tftransfer.RunOptions(feature_cache=tmp_path, seed=0))
    for frozen in (model.get_layer("features"), plan.split.bottom):
        inputs = cached_inputs.cached_inputs(frozen, train, None, plan)
        shapes = [tuple(t.shape[1:]) for t in frozen.outputs]
        flat = tf.nest.flatten(inputs.train.element_spec[0])
        assert [tuple(spec.shape[1:]) for spec in flat] == shapes
    assert isinstance(inputs.train.element_spec[0], tuple) == (plan.split.crossing > 1)
    assert inputs.train.element_spec[1].dtype == tf.int64  # As the labels were.
