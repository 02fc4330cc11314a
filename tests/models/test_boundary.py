import keras
import numpy as np
import pytest

import tftransfer
from tftransfer.data import identify
from tftransfer.models.boundary import split_at
from tftransfer.models.builder import set_trainable
from tftransfer.training import feature_cache

from conftest import write_image_folder


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "images", images_per_class=6)


def residual_backbone(input_size=(32, 32)):
    """conv1 -> conv2 -> conv3, and add(conv1, conv3): a cut above conv2 is
    crossed by two tensors, conv2's output and conv1's."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((*input_size, 3))
    t1 = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(inputs)
    t2 = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(t1)
    t3 = keras.layers.Conv2D(8, 3, padding="same", name="conv3")(t2)
    x = keras.layers.Add(name="add")([t1, t3])
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, keras.layers.ReLU(name="relu")(x), name="residual")


def train_phase_two(base_file, data, cache, unfreeze, seed=3):
    # A fresh base each time: classifiers built on one base share its layers.
    base = tftransfer.load_base(str(base_file), preprocessing="unit")
    keras.utils.set_random_seed(seed)
    model = tftransfer.build_classifier(base, 3, dropout=0.0, augmentation=None)
    history = tftransfer.fine_tune(
        model, data.train, None, head=tftransfer.Phase.head(epochs=0),
        top=tftransfer.Phase.top(epochs=3, learning_rate=1e-2,
                                             unfreeze=unfreeze, warmup_epochs=0),
        options=tftransfer.RunOptions(feature_cache=cache), verbose=0)
    return model, history


def assert_same_training(base_file, data, tmp_path, unfreeze):
    # One batch holds every image, so each step sees the same examples in
    # either order, and without dropout or augmentation both runs take the
    # same steps. What differs is float rounding in differently fused ops.
    uncached, history = train_phase_two(base_file, data, False, unfreeze)
    assert history.top_cache is None
    cached, history = train_phase_two(base_file, data, tmp_path / "cache", unfreeze)
    assert history.top_cache["rows"] == 18 and len(history.top.epoch) == 3
    for a, b in zip(uncached.get_weights(), cached.get_weights()):
        np.testing.assert_allclose(a, b, atol=2e-5)
    initial, _ = train_phase_two(base_file, data, tmp_path / "cache", "none")
    moved = [np.abs(a - b).max() for a, b in zip(initial.get_weights(), cached.get_weights())]
    assert max(moved) > 1e-3  # Training changed the weights: the comparison can fail.
    return cached, history


def test_cached_and_uncached_phase_two_train_the_same_weights(tiny_base_file, folder,
                                                              tmp_path):
    data = tftransfer.image_folder(folder, (32, 32), batch_size=64, validation_split=0)
    assert_same_training(tiny_base_file, data, tmp_path, unfreeze=3)


def test_a_cut_inside_a_residual_block_is_crossed_by_two_tensors(folder, tmp_path):
    base_file = _save(residual_backbone(), tmp_path)
    base = tftransfer.load_base(base_file, preprocessing="unit")
    data = tftransfer.image_folder(folder, (32, 32), batch_size=64, validation_split=0)
    model = tftransfer.build_classifier(base, 3, augmentation=None)
    split, why_not = split_at(model, set_trainable(model, "conv3"))
    assert why_not is None and split.crossing == 2
    images = next(iter(data.train))[0]
    np.testing.assert_allclose(split.trainer(split.bottom(images)), model(images),
                               atol=1e-5)
    cached, history = assert_same_training(base_file, data, tmp_path, unfreeze="conv3")
    assert history.top_cache["shapes"] == [[16, 16, 8], [16, 16, 8]]


def test_a_changed_image_base_or_depth_makes_a_new_entry(tiny_base, tiny_base_file,
                                                         folder):
    def key(base, data, unfreeze):
        model = tftransfer.build_classifier(base, 3, augmentation=None)
        split, _ = split_at(model, set_trainable(model, unfreeze))
        return feature_cache.fingerprint(split.bottom, identify(data.train).key)

    def load():
        return tftransfer.image_folder(folder, (32, 32), validation_split=0)

    same = key(tiny_base, load(), 3)
    assert key(tiny_base, load(), 3) == same
    assert key(tiny_base, load(), 4) != same
    other = tftransfer.load_base(str(tiny_base_file), preprocessing="unit")
    other.backbone.get_layer("conv1").kernel.assign(
        other.backbone.get_layer("conv1").kernel * 2)
    assert key(other, load(), 3) != same
    write_image_folder(folder, images_per_class=6, seed=9)  # New pixels, same names.
    assert key(tiny_base, load(), 3) != same


def test_an_abandoned_extraction_is_removed_and_the_entry_written(tiny_base, tiny_base_file,
                                                                  folder, tmp_path):
    data = tftransfer.image_folder(folder, (32, 32), validation_split=0)
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    split, _ = split_at(model, set_trainable(model, 3))
    entry = tmp_path / "cache" / feature_cache.fingerprint(split.bottom,
                                                           identify(data.train).key)
    abandoned = entry.with_name(entry.name + ".partial-999999999-dead")
    abandoned.mkdir(parents=True)
    (abandoned / "features0-00000.npy").write_bytes(b"half")
    _, history = train_phase_two(tiny_base_file, data, tmp_path / "cache", unfreeze=3)
    assert history.top_cache["path"] == str(entry)
    assert not abandoned.exists() and feature_cache.read_manifest(entry)


def test_phase_two_says_why_it_runs_uncached(tiny_base_file, folder, tmp_path, caplog):
    data = tftransfer.image_folder(folder, (32, 32), validation_split=0)
    with caplog.at_level("INFO", logger="tftransfer"):
        _, history = train_phase_two(tiny_base_file, data, tmp_path / "cache", unfreeze="all")
    assert history.top_cache is None
    assert "top phase cache not used: the whole base trains" in caplog.text


def _save(backbone, tmp_path):
    path = tmp_path / f"{backbone.name}.keras"
    backbone.save(path)
    return str(path)


def test_a_sequential_base_trains_phase_two_uncached_and_says_why(folder, tmp_path, caplog):
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((32, 32, 3)),
                                 keras.layers.Conv2D(4, 3, name="a"),
                                 keras.layers.Conv2D(4, 3, name="b")], name="plain")
    base_file = _save(backbone, tmp_path)
    data = tftransfer.image_folder(folder, (32, 32), validation_split=0)
    with caplog.at_level("INFO", logger="tftransfer"):
        _, history = train_phase_two(base_file, data, tmp_path / "cache", unfreeze=1)
    assert history.top_cache is None
    assert "top phase cache not used: the base 'plain' is not a functional" in caplog.text
    assert len(history.top.epoch) == 3
