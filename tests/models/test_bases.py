import keras
import numpy as np
import pytest

import tftransfer
from tftransfer.models.bases import BUNDLED_BASE, get_base_spec, list_bases


def test_registry_covers_every_keras_applications_family():
    names = {spec.name for spec in list_bases()}
    for family in ["mobilenet", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                   "efficientnet_b0", "efficientnet_b7", "efficientnet_v2_b0",
                   "efficientnet_v2_l", "resnet50", "resnet50_v2", "convnext_tiny",
                   "densenet121", "inception_v3", "xception", "nasnet_mobile",
                   BUNDLED_BASE]:
        assert family in names
    assert get_base_spec("xception").input_size == 299


def test_load_base_by_name_with_custom_size():
    base = tftransfer.load_base("mobilenet_v2", weights=None, input_size=64)
    assert base.input_size == (64, 64)
    assert base.preprocessing == "tf"
    # 1280 of its own, and 160 from the block it taps by default.
    assert get_base_spec("mobilenet_v2").taps == ("block_14_add",)
    assert base.feature_dim == 1280 + 160
    assert base.features(np.zeros((1, 64, 64, 3), "float32")).shape == (1, 1440)


def test_taps_append_inner_layers_to_the_features_and_train_with_them():
    plain = tftransfer.load_base("mobilenet_v2", weights=None, input_size=64, taps=())
    tapped = tftransfer.load_base("mobilenet_v2", weights=None, input_size=64,
                                  taps=["block_13_expand_relu", "block_15_add"])
    assert (plain.feature_dim, tapped.feature_dim) == (1280, 1280 + 576 + 160)
    one = tftransfer.load_base("mobilenet_v2", weights=None, input_size=64, taps="block_15_add")
    assert one.feature_dim == 1280 + 160
    tapped.backbone.set_weights(plain.backbone.get_weights())  # Same layers, same weights.
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    features = tapped.features(x).numpy()
    np.testing.assert_allclose(features[:, :1280], plain.features(x), atol=1e-5)
    inner = keras.Model(tapped.backbone.input,
                        tapped.backbone.get_layer("block_15_add").output)
    pooled = inner(tapped.features.get_layer("preprocess")(x)).numpy().mean(axis=(1, 2))
    np.testing.assert_allclose(features[:, -160:], pooled, atol=1e-5)
    # The taps are in the backbone, so unfreezing its top trains what they read.
    model = tftransfer.build_classifier(tapped, 3)
    tftransfer.set_trainable(model, "block_15_add")
    assert model.get_layer("features").get_layer(tapped.backbone.name).get_layer(
        "block_15_add").trainable


@pytest.mark.parametrize("spec, taps, message", [
    ("mobilenet_v2", ["no_such_layer"], "has no layer named 'no_such_layer' to tap"),
    ("hub_mobilenet_v2_100_224", ["block_1"], "runs only as a whole"),
])
def test_bad_taps_name_the_problem(spec, taps, message):
    with pytest.raises(tftransfer.TransferError, match=message):
        tftransfer.load_base(spec, weights=None if spec == "mobilenet_v2" else "x",
                             input_size=64, taps=taps)


def test_bundled_base_loads_its_pretrained_weights():
    pretrained = tftransfer.load_base(BUNDLED_BASE)
    random = tftransfer.load_base(BUNDLED_BASE, weights=None)
    assert pretrained.input_size == (48, 48)
    first = pretrained.backbone.get_layer("Conv1").kernel.numpy()
    assert not np.allclose(first, random.backbone.get_layer("Conv1").kernel.numpy())


def test_load_base_from_keras_file_pools_a_feature_map(tiny_base_file):
    base = tftransfer.load_base(str(tiny_base_file), preprocessing="unit")
    assert base.input_size == (32, 32)
    assert base.feature_dim == 16
    assert base.backbone.name == "tiny_backbone"


def test_local_weights_file_round_trip(tmp_path):
    base = tftransfer.load_base(BUNDLED_BASE)
    path = tmp_path / "w.weights.h5"
    base.backbone.save_weights(path)
    again = tftransfer.load_base(BUNDLED_BASE, weights=str(path))
    x = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    np.testing.assert_allclose(base.features(x), again.features(x), atol=1e-6)


@pytest.mark.parametrize("spec, kwargs, message", [
    ("no_such_base", {}, "unknown base 'no_such_base'"),
    ("/nowhere/base.keras", {}, "base not found: /nowhere/base.keras"),
    ("mobilenet_v2", {"weights": "/nowhere/w.h5"}, "weights file not found: /nowhere/w.h5"),
    ("mobilenet_v2", {"weights": None, "input_size": 8}, "cannot build base 'mobilenet_v2'"),
])
def test_bad_base_arguments_name_the_problem(spec, kwargs, message):
    with pytest.raises(tftransfer.TransferError, match=message.replace("(", r"\(")):
        tftransfer.load_base(spec, **kwargs)


def test_register_base_is_one_entry():
    from tftransfer.models import bases

    tftransfer.register_base(
        "test_tiny_entry",
        lambda shape, weights: keras.Sequential(
            [keras.Input(shape), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()]),
        input_size=24, preprocessing="unit", default_weights=None)
    try:
        base = tftransfer.load_base("test_tiny_entry")
        assert base.input_size == (24, 24) and base.feature_dim == 4
        with pytest.raises(tftransfer.TransferError, match="already registered"):
            tftransfer.register_base("test_tiny_entry", None, 24, "unit")
    finally:
        del bases._REGISTRY["test_tiny_entry"]
