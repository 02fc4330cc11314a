import logging

import numpy as np
import tensorflow as tf

import tftransfer
from tftransfer import cached_inputs
from tftransfer.builder import set_trainable
from tftransfer.cached_inputs import boundary_split, why_not_cached
from tftransfer.data import register_source


def unshuffled(count=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (count, size, size, 3)).astype("float32")
    labels = np.arange(count) % 3
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    return register_source(ds, f"unshuffled-{count}-{seed}", class_counts=np.bincount(labels))


def test_why_not_cached_names_the_reason(tiny_base):
    model = tftransfer.build_classifier(tiny_base, 3)  # With augmentation.
    assert why_not_cached(model, unshuffled(), False, None) == "disabled"
    assert "tf.data.Dataset" in why_not_cached(model, [(1, 2)], True, None)
    assert "augmented_views" in why_not_cached(model, unshuffled(), True, 0)
    assert why_not_cached(model, unshuffled(), True, 4) is None


def test_boundary_split_runs_uncached_when_the_disk_is_short(tiny_base, tmp_path, caplog,
                                                             monkeypatch):
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    unfrozen = set_trainable(model, 3)
    split, why_not = boundary_split(model, unshuffled(), unfrozen, tmp_path, None)
    assert split is not None and why_not is None
    monkeypatch.setattr(cached_inputs, "free_space", lambda folder: 100)
    with caplog.at_level(logging.WARNING, logger="tftransfer"):
        split, why_not = boundary_split(model, unshuffled(), unfrozen, tmp_path, None)
    assert split is None and why_not == "not enough disk space"
    assert "would not fit" in caplog.text


def test_both_phases_share_one_pass_of_the_base(tiny_base, tmp_path, caplog):
    model = tftransfer.build_classifier(tiny_base, 3, dropout=0.0, augmentation=None)
    train, validation = unshuffled(), unshuffled(6, seed=1)
    images = np.concatenate([x for x, _ in train.as_numpy_iterator()])
    expected = model.get_layer("features").predict(images, verbose=0)  # Before training.
    with caplog.at_level(logging.INFO, logger="tftransfer"):
        history = tftransfer.fine_tune(
            model, train, validation, head=tftransfer.Phase.head(epochs=1),
            fine_tune=tftransfer.Phase.fine_tune(epochs=1, unfreeze=3), refit=False,
            feature_cache=tmp_path, verbose=0)
    assert "phase 1's features from the activations" in caplog.text
    # The base's bottom ran once for each split; phase 2 reused both entries.
    assert caplog.text.count("feature cache: reusing") == 2
    entry, manifest = history.feature_cache["path"], history.feature_cache
    rows = np.concatenate([np.load(f"{entry}/{names[0]}") for names in manifest["shards"]])
    # The same layers in two models: only float rounding may differ.
    np.testing.assert_allclose(rows, expected, rtol=1e-5, atol=1e-5)
    assert history.fine_tune_cache["path"] != entry


def test_without_phase_two_the_features_come_from_the_whole_base(tiny_base, tmp_path, caplog):
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    with caplog.at_level(logging.INFO, logger="tftransfer"):
        tftransfer.fine_tune(model, unshuffled(), None, head=tftransfer.Phase.head(epochs=1),
                             fine_tune=tftransfer.Phase.fine_tune(epochs=0),
                             feature_cache=tmp_path, verbose=0)
    assert "from the activations" not in caplog.text
    assert caplog.text.count("extracting features") == 1


def test_cached_spec_is_the_signature_of_the_cached_batches(tiny_base, tmp_path):
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    split, _ = boundary_split(model, unshuffled(), set_trainable(model, 3), tmp_path, None)
    train = unshuffled()
    for frozen in (model.get_layer("features"), split.bottom):
        inputs = cached_inputs.cached_inputs(frozen, train, None, model=model,
                                             feature_cache=tmp_path, views=None, seed=0)
        assert cached_inputs.cached_spec(frozen, train) == inputs.train.element_spec
    assert isinstance(inputs.train.element_spec[0], tuple) == (split.crossing > 1)
    assert inputs.train.element_spec[1].dtype == tf.int64  # As the labels were.
