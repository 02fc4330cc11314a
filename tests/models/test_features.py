import keras
import numpy as np
import pytest

from tftransfer.models.features import (Preprocess, assemble_features, base_from_model,
                                        find_backbone)

from conftest import make_tiny_backbone


@pytest.mark.parametrize("mode, module", [
    ("tf", keras.applications.mobilenet_v2),
    ("torch", keras.applications.densenet),
    ("caffe", keras.applications.resnet50),
])
def test_preprocess_matches_keras_applications(mode, module):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    expected = module.preprocess_input(pixels.copy())
    np.testing.assert_allclose(Preprocess(mode)(pixels), expected, rtol=1e-5, atol=1e-4)


def test_assemble_features_pools_a_map_and_finds_its_backbone():
    backbone = make_tiny_backbone((32, 32))
    features = assemble_features(backbone, (32, 32), "unit")
    assert features.name == "features" and features.output_shape == (None, 16)
    assert find_backbone(features) is backbone
    base = base_from_model(features)
    assert base.input_size == (32, 32) and base.preprocessing == "unit"
    assert base.feature_dim == 16


def test_preprocess_rejects_an_unknown_mode():
    import tftransfer

    with pytest.raises(tftransfer.TransferError, match="unknown preprocessing 'bgr'"):
        Preprocess("bgr")


def test_a_hub_module_backbone_is_told_apart_from_a_keras_model(tiny_base, hub_bn_module):
    import tftransfer
    from tftransfer.models.features import is_module_backbone

    assert not is_module_backbone(tftransfer.build_classifier(tiny_base, 2))
    hub = tftransfer.load_base(str(hub_bn_module))
    assert is_module_backbone(tftransfer.build_classifier(hub, 2))
    assert is_module_backbone(hub.features)
