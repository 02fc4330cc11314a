import keras
import numpy as np
import pytest

import tftransfer
from tftransfer.errors import TransferError
from tftransfer.models.builder import augmentation_of, backbone_layers, head_of
from tftransfer.training.auto import auto_unfreeze


def trainable_names(model):
    return {layer.name for layer in backbone_layers(model) if layer.trainable_weights}


def test_classifier_has_features_and_head(tiny_base):
    model = tftransfer.build_classifier(tiny_base, 3, dropout=0.5)
    assert model.output_shape == (None, 3)
    assert model.get_layer("features") is tiny_base.features
    assert head_of(model).get_layer("probabilities").dtype_policy.compute_dtype == "float32"
    probabilities = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_default_is_frozen_base_with_trainable_head(tiny_base):
    model = tftransfer.build_classifier(tiny_base, 3)
    assert trainable_names(model) == set()
    head_weights = head_of(model).trainable_weights
    assert len(model.trainable_weights) == len(head_weights) == 2


@pytest.mark.parametrize("trainable, expected", [
    ("none", set()),
    (0, set()),
    (3, {"conv3"}),          # top 3 = conv3, bn3, relu3; BN stays frozen
    (5, {"conv3"}),          # bn2, relu2 have no trainable weights
    (6, {"conv2", "conv3"}),
    ("conv2", {"conv2", "conv3"}),
    ("all", {"conv1", "conv2", "conv3"}),
])
def test_set_trainable_top_layers_keeps_batchnorm_frozen(tiny_base, trainable, expected):
    model = tftransfer.build_classifier(tiny_base, 3)
    tftransfer.set_trainable(model, trainable)
    assert trainable_names(model) == expected
    for layer in backbone_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable
    assert head_of(model).trainable


def test_set_trainable_can_be_changed_repeatedly(tiny_base):
    model = tftransfer.build_classifier(tiny_base, 3)
    for trainable, expected in [(3, {"conv3"}), ("all", {"conv1", "conv2", "conv3"}),
                                (6, {"conv2", "conv3"}), ("none", set()), (3, {"conv3"})]:
        tftransfer.set_trainable(model, trainable)
        assert trainable_names(model) == expected, trainable


def test_set_trainable_returns_count_and_rejects_bad_values(tiny_base):
    model = tftransfer.build_classifier(tiny_base, 3)
    assert tftransfer.set_trainable(model, 4) == 4
    assert tftransfer.set_trainable(model, "all") == 9
    with pytest.raises(tftransfer.TransferError, match="cannot unfreeze 10 layers.*has 9 layers"):
        tftransfer.set_trainable(model, 10)
    with pytest.raises(tftransfer.TransferError, match="no layer named 'conv9'"):
        tftransfer.set_trainable(model, "conv9")


def test_fewer_than_two_classes_is_an_error(tiny_base):
    with pytest.raises(tftransfer.TransferError, match="at least 2 classes"):
        tftransfer.build_classifier(tiny_base, 1)


@pytest.mark.parametrize("per_class, fraction", [(8, 0.0), (29, 0.0), (30, 0.25),
                                                 (99, 0.25), (100, 0.5), (5000, 1.0)])
def test_auto_unfreeze_follows_the_table(tiny_base, per_class, fraction):
    model = tftransfer.build_classifier(tiny_base, 3)
    layers = len(backbone_layers(model))
    assert auto_unfreeze(model, per_class) == round(fraction * layers)


def test_default_augmentation_is_in_the_model_and_inactive_at_inference(tiny_base):
    model = tftransfer.build_classifier(tiny_base, 3)
    assert [l.name for l in augmentation_of(model).layers] == ["flip", "rotation", "zoom"]
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert np.array_equal(model(images, training=False),
                          model.get_layer("head")(model.get_layer("features")(images)))
    assert augmentation_of(tftransfer.build_classifier(tiny_base, 3,
                                                       augmentation=None)) is None
    with pytest.raises(TransferError, match="augmentation must be"):
        tftransfer.build_classifier(tiny_base, 3, augmentation="lots")
