import functools
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tftransfer
from tftransfer.errors import TransferError
from tftransfer.models.builder import head_of
from tftransfer.models.features import assemble_features
from tftransfer.training import auto, feature_cache
from tftransfer.training.feature_cache import (cached_features, clear_feature_cache,
                                               joined_features, read_manifest)

from conftest import make_tiny_backbone, write_image_folder


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "images", images_per_class=6)


def load(folder, size=(32, 32), batch_size=8):
    return tftransfer.image_folder(folder, size, batch_size=batch_size,
                                   validation_split=0)


def head_predictions(tiny_base, data, feature_cache_dir, seed=3):
    keras.utils.set_random_seed(seed)
    model = tftransfer.build_classifier(tiny_base, 3, dropout=0.0, augmentation=None)
    history = tftransfer.fine_tune(
        model, data.train, None, head=tftransfer.Phase.head(epochs=4, learning_rate=0.05),
        top=tftransfer.Phase.top(epochs=0),
        options=tftransfer.RunOptions(feature_cache=feature_cache_dir),
        verbose=0)
    probe = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    return model.predict(probe, verbose=0), history


def test_cached_and_uncached_heads_agree(tiny_base, folder, tmp_path):
    # One batch holds every image, so each step sees the same examples
    # whatever the order; without dropout, both runs take the same steps.
    data = load(folder, batch_size=64)
    uncached, history = head_predictions(tiny_base, data, False)
    assert history.head_cache is None
    cached, history = head_predictions(tiny_base, data, tmp_path / "cache")
    assert history.head_cache["rows"] == 18
    assert not history.head_cache["reused"]
    np.testing.assert_allclose(cached, uncached, atol=1e-4)
    initial, _ = head_predictions(tiny_base, data, tmp_path / "cache", seed=4)
    assert np.abs(initial - cached).max() > 1e-3  # The comparison can fail.


def test_second_run_reuses_the_cache_without_extraction(tiny_base, folder, tmp_path,
                                                        monkeypatch):
    data = load(folder)
    _, first = cached_features(tiny_base.features, data.train, cache_dir=tmp_path)
    assert not first["reused"]

    def fail(*args, **kwargs):
        raise AssertionError("extracted again")

    monkeypatch.setattr(feature_cache, "extract_features", fail)
    again = load(folder)  # A new dataset over the same files.
    dataset, second = cached_features(tiny_base.features, again.train, cache_dir=tmp_path)
    assert second["reused"] and second["path"] == first["path"]
    cached = sorted((int(y), tuple(np.round(f, 4))) for xs, ys in dataset
                    for f, y in zip(xs.numpy(), ys.numpy()))
    fresh = sorted((int(y), tuple(np.round(f, 4))) for xs, ys in again.train
                   for f, y in zip(tiny_base.features.predict(xs, verbose=0), ys.numpy()))
    assert len(cached) == 18
    np.testing.assert_allclose([f for _, f in cached], [f for _, f in fresh], atol=1e-3)
    assert [y for y, _ in cached] == [y for y, _ in fresh]


def entry_for(base, data, cache_dir):
    return cached_features(base.features, data.train, cache_dir=cache_dir)[1]["path"]


def test_changing_an_image_the_base_or_the_size_invalidates(tiny_base, tiny_base_file,
                                                           folder, tmp_path):
    cache = tmp_path / "cache"
    first = entry_for(tiny_base, load(folder), cache)
    assert entry_for(tiny_base, load(folder), cache) == first

    image = folder / "red" / "000.png"
    Image.fromarray(np.zeros((36, 40, 3), "uint8")).save(image)
    changed_image = entry_for(tiny_base, load(folder), cache)
    assert changed_image != first

    other = tftransfer.load_base(str(tiny_base_file), preprocessing="unit")
    other.backbone.layers[1].kernel.assign(other.backbone.layers[1].kernel * 2)
    changed_base = entry_for(other, load(folder), cache)
    assert changed_base not in (first, changed_image)

    def same_weights_at(size):
        features = assemble_features(make_tiny_backbone(size), size, "unit")
        return tftransfer.Base("tiny", features, size, "unit")

    small = entry_for(same_weights_at((32, 32)), load(folder), cache)
    bigger = entry_for(same_weights_at((40, 40)), load(folder, size=(40, 40)), cache)
    assert bigger != small


KILLED_WRITER = """
import sys, time
import tensorflow as tf
import tftransfer
from tftransfer.models.features import assemble_features
from tftransfer.training import auto, feature_cache

feature_cache._SHARD_BYTES = 1  # A shard per batch, so there is a partial state.
base = tftransfer.load_base(sys.argv[1], preprocessing="unit")
data = tftransfer.image_folder(sys.argv[2], (32, 32), batch_size=2, validation_split=0)
slow = data.train.map(lambda x, y: tf.py_function(
    lambda a, b: (time.sleep(0.5), a, b)[1:], [x, y], [tf.float32, tf.int32]))
feature_cache.cached_features(base.features, slow, cache_dir=sys.argv[3])
"""


@pytest.mark.slow
def test_an_extraction_killed_half_way_is_rebuilt(tiny_base, tiny_base_file, folder,
                                                 tmp_path):
    cache = tmp_path / "cache"
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(KILLED_WRITER))
    writer = subprocess.Popen([sys.executable, str(script), str(tiny_base_file),
                               str(folder), str(cache)])
    deadline = time.time() + 120
    while not list(cache.glob("*.partial-*/labels-00001.npy")):  # A shard's last file.
        assert writer.poll() is None, "the writer ended before it was killed"
        assert time.time() < deadline
        time.sleep(0.1)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    partial = next(cache.glob("*.partial-*"))
    entry = cache / partial.name.split(".partial-")[0]
    assert not entry.exists() and read_manifest(partial) is None

    # Mapped as the writer's was, so that its content is read for the key (a
    # loader's own split is keyed by its files instead).
    same = load(folder).train.map(lambda x, y: (x, y))
    dataset, manifest = cached_features(tiny_base.features, same, cache_dir=cache)
    assert not manifest["reused"] and manifest["path"] == str(entry)
    assert manifest["rows"] == 18 and sum(len(y) for _, y in dataset) == 18
    assert not partial.exists()  # The dead writer's leftovers are gone.


def test_augmentation_falls_back_with_a_note_or_caches_views(tiny_base, folder, tmp_path,
                                                            caplog):
    data = load(folder)
    model = tftransfer.build_classifier(tiny_base, 3, augmentation={"rotation": 0.1})
    with caplog.at_level(logging.INFO, logger="tftransfer"):
        history = tftransfer.fine_tune(
            model, data.train, None, head=tftransfer.Phase.head(epochs=1),
            top=tftransfer.Phase.top(epochs=0),
        options=tftransfer.RunOptions(feature_cache=tmp_path),
            augmented_views=0, verbose=0)
    assert history.head_cache is None
    assert "random augmentation" in caplog.text and "augmented_views" in caplog.text

    history = tftransfer.fine_tune(
        model, data.train, None, head=tftransfer.Phase.head(epochs=1),
        top=tftransfer.Phase.top(epochs=0),
        options=tftransfer.RunOptions(feature_cache=tmp_path),
        augmented_views=3, verbose=0)
    assert history.head_cache["rows"] == 3 * 18
    assert history.head_epochs == 1


def test_auto_views_augment_small_classes_and_leave_larger_ones_plain(
        tiny_base, folder, tmp_path, caplog, monkeypatch):
    data = load(folder)  # 6 training images per class.
    model = tftransfer.build_classifier(tiny_base, 3)  # The default augmentation.
    run = functools.partial(
        tftransfer.fine_tune, model, data.train, None, head=tftransfer.Phase.head(epochs=1),
        top=tftransfer.Phase.top(epochs=0),
        options=tftransfer.RunOptions(feature_cache=tmp_path), verbose=0)
    assert run().head_cache["rows"] == 8 * 18  # 48 rows / 6 images: capped at 8.
    monkeypatch.setattr(auto, "AUGMENT_BELOW", 6)
    with caplog.at_level(logging.INFO, logger="tftransfer"):
        plain = run().head_cache
    assert plain["rows"] == 18 and "unaugmented" in caplog.text
    # The same entry as a model without augmentation: the images, not views.
    unaugmented = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    unaugmented.get_layer("features").set_weights(model.get_layer("features").get_weights())
    assert tftransfer.fine_tune(
        unaugmented, data.train, None, head=tftransfer.Phase.head(epochs=1),
        top=tftransfer.Phase.top(epochs=0),
        options=tftransfer.RunOptions(feature_cache=tmp_path),
        verbose=0).head_cache["reused"]


def test_the_trained_head_is_the_classifier_head(tiny_base, folder, tmp_path):
    data = load(folder)
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    before = [w.numpy().copy() for w in head_of(model).weights]
    tftransfer.fine_tune(
        model, data.train, None, head=tftransfer.Phase.head(epochs=2),
        top=tftransfer.Phase.top(epochs=0),
        options=tftransfer.RunOptions(feature_cache=tmp_path), verbose=0)
    after = head_of(model).weights
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, after))
    assert "accuracy" in model.evaluate(data.train, verbose=0, return_dict=True)


def test_clear_feature_cache(tiny_base, folder, tmp_path):
    cache = tmp_path / "cache"
    cached_features(tiny_base.features, load(folder).train, cache_dir=cache)
    (cache / "notes").mkdir()  # Not an entry: a wrong --feature-cache loses nothing.
    cleared = clear_feature_cache(cache)
    assert len(cleared.deleted) == 1 and not cleared.in_use and not cleared.failed
    assert [p.name for p in cache.iterdir()] == ["notes"]
    assert clear_feature_cache(tmp_path / "missing").deleted == []


def test_clear_feature_cache_keeps_the_entries_a_training_streams_from(
        tiny_base, folder, tmp_path, monkeypatch):
    import gc

    import tftransfer.training.feature_cache as feature_cache

    cache = tmp_path / "cache"
    _, manifest = cached_features(tiny_base.features, load(folder).train, cache_dir=cache)
    # Too big for memory: the dataset streams from the shards, epoch after epoch.
    monkeypatch.setattr(feature_cache, "memory_short_of", lambda size: size)
    streaming = joined_features([manifest], 4)
    cleared = clear_feature_cache(cache)
    assert cleared.deleted == [] and cleared.in_use == [Path(manifest["path"])]
    assert sum(int(len(y)) for _, y in streaming) == manifest["rows"]
    del streaming
    gc.collect()
    assert clear_feature_cache(cache).deleted == [Path(manifest["path"])]


def test_joined_features_shuffle_the_rows_of_several_entries_together(tmp_path):
    manifests = []
    for part, rows in enumerate((5, 3)):
        features = np.full((rows, 2), part, "float32")
        ds = tf.data.Dataset.from_tensor_slices((features, np.full(rows, part))).batch(2)
        _, manifest = cached_features(keras.Sequential([keras.Input((2,)), keras.layers.Identity()]), ds,
                                      cache_dir=tmp_path)
        manifests.append(manifest)
    joined = joined_features(manifests, 4, shuffle=True, seed=0)
    labels = np.concatenate([y for _, y in joined.as_numpy_iterator()])
    assert sorted(labels.tolist()) == [0] * 5 + [1] * 3
    assert int(joined.cardinality()) == 2
    assert labels[:5].tolist() != [0] * 5  # Mixed, not one entry after the other.
    with pytest.raises(TransferError, match="different shapes"):
        joined_features([manifests[0], {**manifests[1], "shapes": [[3]]}], 4)


def test_extraction_traces_the_base_once_whatever_the_last_batch_size(tmp_path):
    features = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    ds = tf.data.Dataset.from_tensor_slices((np.ones((10, 3), "float32"),
                                             np.zeros(10, "int32"))).batch(4)  # 4, 4, 2
    _, manifest = cached_features(features, ds,
                                  cache_dir=tmp_path)
    assert manifest["rows"] == 10
    (extract,) = feature_cache._EXTRACTORS[features].values()
    assert extract.experimental_get_tracing_count() == 1


def test_a_model_without_a_config_is_fingerprinted_by_its_layers():
    from tftransfer.training.feature_cache import _config_text

    class Unconfigurable(keras.Sequential):
        def get_config(self):
            raise NotImplementedError

    inner = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="inner_dense")])
    model = Unconfigurable([keras.Input((2,)), inner, keras.layers.Dense(1, name="last")])
    text = _config_text(model)
    assert "Dense:inner_dense" in text and "Dense:last" in text
