import hashlib
import shutil
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from tftransfer.models import hub
from tftransfer.models.hub import HubModule

from conftest import write_hub_module


def module_weights(model):
    layer = model.get_layer("features").get_layer("hub_module")
    return {v.name: v.numpy().copy() for v in layer.weights}


@pytest.fixture
def colors(image_folder_path):
    return tftransfer.image_folder(image_folder_path, (32, 32), batch_size=8)


def test_hub_module_is_a_keras3_layer_with_the_module_variables(hub_bn_module):
    base = tftransfer.load_base(str(hub_bn_module))
    assert base.input_size == (32, 32) and base.preprocessing == "unit"
    assert base.feature_dim == 8
    layer = base.backbone
    assert isinstance(layer, keras.layers.Layer) and isinstance(layer, HubModule)
    assert {v.name for v in layer.weights} == {
        "conv_kernel_0", "conv_bias_0", "bn_moving_mean_0", "bn_moving_variance_0"}
    model = tftransfer.build_classifier(base, 3, augmentation=None)
    assert isinstance(model, keras.Model)


def test_frozen_training_leaves_module_unchanged_and_fine_tuning_changes_it(
        hub_bn_module, colors):
    base = tftransfer.load_base(str(hub_bn_module))
    model = tftransfer.build_classifier(base, 3, augmentation=None)
    before = module_weights(model)
    tftransfer.fine_tune(
        model, colors.train, None, head=tftransfer.Phase.head(epochs=2),
        top=tftransfer.Phase.top(epochs=0), verbose=0)
    after_head = module_weights(model)
    for name in before:
        np.testing.assert_array_equal(before[name], after_head[name])
    tftransfer.set_trainable(model, "all")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(colors.train, epochs=2, verbose=0)
    after_fine_tune = module_weights(model)
    assert not np.array_equal(after_head["conv_kernel_0"], after_fine_tune["conv_kernel_0"])
    # By default the module runs in inference mode, as Keras bases' BatchNorm.
    np.testing.assert_array_equal(after_head["bn_moving_mean_0"],
                                  after_fine_tune["bn_moving_mean_0"])

    base.backbone.module_training = True
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(colors.train, epochs=1, verbose=0)
    # Now training=True reached the module: its BatchNorm statistics moved.
    assert not np.array_equal(after_fine_tune["bn_moving_mean_0"],
                              module_weights(model)["bn_moving_mean_0"])


def test_regularization_loss_counts_only_while_training(hub_l2_module):
    base = tftransfer.load_base(str(hub_l2_module))
    model = tftransfer.build_classifier(base, 3, unfreeze="all", augmentation=None)
    images = np.zeros((2, 32, 32, 3), "float32")
    model(images, training=True)
    kernel = base.backbone.weights[0].numpy()
    assert len(model.losses) == 1
    np.testing.assert_allclose(float(model.losses[0]), 0.5 * np.sum(kernel ** 2), rtol=1e-5)
    model(images, training=False)
    assert model.losses == []


def test_keras_and_saved_model_round_trips(hub_bn_module, colors, tmp_path):
    base = tftransfer.load_base(str(hub_bn_module))
    model = tftransfer.build_classifier(base, 3, augmentation=None)
    tftransfer.fine_tune(
        model, colors.train, colors.validation, head=tftransfer.Phase.head(epochs=2),
        top=tftransfer.Phase.top(epochs=1, learning_rate=1e-2, unfreeze="all"),
        verbose=0)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "model.keras")
    # A hub module in a .keras file loads only when the file is trusted (test_saving).
    reloaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=False)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, atol=1e-5)
    # The weights come from the .keras file, not from the module on disk.
    np.testing.assert_array_equal(module_weights(reloaded)["conv_kernel_0"],
                                  module_weights(model)["conv_kernel_0"])
    path = tftransfer.export_saved_model(model, tmp_path / "export", colors.class_names)
    served = tf.saved_model.load(str(path)).signatures["serving_images"]
    np.testing.assert_allclose(served(images=tf.constant(images))["probabilities"],
                               expected, atol=1e-5)


def test_signature_only_module_is_frozen(tmp_path):
    path = write_hub_module(tmp_path / "sig", signature_only=True)
    base = tftransfer.load_base(str(path))
    assert base.feature_dim == 8
    model = tftransfer.build_classifier(base, 3, augmentation=None)
    with pytest.raises(tftransfer.TransferError, match="only signatures"):
        tftransfer.set_trainable(model, "all")


@pytest.mark.parametrize("handle", [
    "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5",
    "https://www.kaggle.com/models/google/mobilenet-v2/TensorFlow2/"
    "100-224-feature-vector/2",
    "gs://my-bucket/modules/feature_vector.tar.gz",
])
def test_handle_resolves_offline_from_tfhub_cache_dir(hub_l2_module, tmp_path, monkeypatch,
                                                      handle):
    import tensorflow_hub

    cache = tmp_path / "cache"
    # tensorflow_hub caches every remote handle (tfhub.dev, Kaggle, gs://
    # archives) in $TFHUB_CACHE_DIR/<sha1 of the handle>.
    shutil.copytree(hub_l2_module, cache / hashlib.sha1(handle.encode()).hexdigest())
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(hub.socket, "create_connection", no_network)
    monkeypatch.setattr(tensorflow_hub, "resolve", no_network)
    base = tftransfer.load_base(handle)
    assert base.name == handle and base.feature_dim == 8


def test_unreachable_gcs_handle_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(hub, "GCS_HOST", "127.0.0.1:9")  # A closed port: no network.
    start = time.time()
    with pytest.raises(tftransfer.TransferError,
                       match="cannot reach gs://bucket/m.*put the unpacked module in"):
        tftransfer.load_base("gs://bucket/module")
    assert time.time() - start < 10


def test_unreachable_handle_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    start = time.time()
    with pytest.raises(tftransfer.TransferError, match="cannot reach .*put the unpacked module in"):
        tftransfer.load_base("https://127.0.0.1:9/models/feature_vector/1")
    assert time.time() - start < 10


def test_a_plain_http_handle_is_refused_before_any_connection(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(hub.socket, "create_connection", no_network)
    with pytest.raises(tftransfer.TransferError, match="fetched over https:// only"):
        tftransfer.load_base("http://example.com/models/feature_vector/1")


def test_registry_names_of_hub_modules_resolve_offline_from_the_cache(tmp_path,
                                                                      monkeypatch):
    from conftest import write_hub_module
    from tftransfer.models.bases import get_base_spec

    spec = get_base_spec("hub_mobilenet_v2_100_224")
    assert spec.input_size == 224 and spec.preprocessing == "unit"
    cache = tmp_path / "cache"
    write_hub_module(cache / hashlib.sha1(spec.default_weights.encode()).hexdigest(),
                     size=224)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    base = tftransfer.load_base("hub_mobilenet_v2_100_224")
    assert base.name == "hub_mobilenet_v2_100_224"
    assert base.input_size == (224, 224) and base.preprocessing == "unit"
    assert base.feature_dim == 8
    for name in ["hub_mobilenet_v3_large_100_224", "hub_efficientnet_v2_b0",
                 "hub_bit_m_r50x1"]:
        assert get_base_spec(name).default_weights.startswith("https://tfhub.dev/")


def test_batch_norm_scales_train_only_when_training_reaches_the_module():
    from tftransfer.models.bases import SAVED_MODELS_DIR

    base = tftransfer.load_base(str(SAVED_MODELS_DIR / "fashion_mobilenet_v2_hub"))
    model = tftransfer.build_classifier(base, 3, unfreeze="all", augmentation=None)
    names = {w.name for w in base.backbone.trainable_weights}
    assert "Conv1_kernel_0" in names and "block_1_expand_kernel_0" in names
    assert not any("gamma" in n or "beta" in n for n in names)  # As in Keras bases.
    base.backbone.module_training = True
    names = {w.name for w in base.backbone.trainable_weights}
    assert {"bn_Conv1_gamma_0", "block_1_expand_BN_beta_0"} <= names
    assert not any("moving" in n for n in names)
    assert len(model.trainable_weights) == len(base.backbone.trainable_weights) + 2


def write_two_conv_module(path, size=32):
    """A TF2 module whose trainable variables are listed in creation order:
    conv1/kernel, conv1/bias, conv2/kernel, conv2/bias (the top)."""
    rng = np.random.default_rng(0)
    obj = tf.train.Checkpoint()
    names = ["conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias"]
    shapes = [(3, 3, 3, 8), (8,), (3, 3, 8, 8), (8,)]
    variables = [tf.Variable(rng.normal(0, 0.3, shape).astype("float32"), name=name)
                 for name, shape in zip(names, shapes)]
    obj.v = variables

    def forward(images, training):
        x = tf.nn.relu(tf.nn.conv2d(images, variables[0], 2, "SAME") + variables[1])
        x = tf.nn.relu(tf.nn.conv2d(x, variables[2], 1, "SAME") + variables[3])
        return tf.reduce_mean(x, axis=[1, 2])

    call = tf.function(forward)
    spec = tf.TensorSpec([None, size, size, 3], tf.float32)
    call.get_concrete_function(spec, True)
    call.get_concrete_function(spec, False)
    obj.__call__ = call
    obj.variables = list(variables)
    obj.trainable_variables = list(variables)
    obj.regularization_losses = []
    tf.saved_model.save(obj, str(path))
    return path


@pytest.mark.parametrize("unfreeze, changed", [
    (2, {"conv2_kernel_0", "conv2_bias_0"}),
    (1, {"conv2_bias_0"}),
    ("all", {"conv1_kernel_0", "conv1_bias_0", "conv2_kernel_0", "conv2_bias_0"}),
])
def test_unfreeze_n_trains_only_the_top_n_variables_of_a_hub_module(colors, tmp_path,
                                                                    unfreeze, changed):
    base = tftransfer.load_base(str(write_two_conv_module(tmp_path / "module")))
    module = base.backbone
    assert [v.name for v in module.fine_tunable_variables] == [
        "conv1_kernel_0", "conv1_bias_0", "conv2_kernel_0", "conv2_bias_0"]
    before = {v.name: v.numpy().copy() for v in module.weights}
    keras.utils.set_random_seed(0)
    model = tftransfer.build_classifier(base, 3, augmentation=None)
    # No phase 1, so that phase 2's weights are kept whatever its loss.
    history = tftransfer.fine_tune(
        model, colors.train, None, head=tftransfer.Phase.head(epochs=0),
        top=tftransfer.Phase.top(epochs=2, learning_rate=1e-2, unfreeze=unfreeze,
                                             warmup_epochs=0), verbose=0)
    assert history.kept_phase == "top"
    moved = {v.name for v in module.weights if not np.array_equal(v.numpy(), before[v.name])}
    assert moved == changed


def test_hub_unfreeze_errors_name_the_problem(tmp_path):
    base = tftransfer.load_base(str(write_two_conv_module(tmp_path / "module")))
    model = tftransfer.build_classifier(base, 3, augmentation=None)
    with pytest.raises(tftransfer.TransferError, match="cannot unfreeze 5 variables"):
        tftransfer.set_trainable(model, 5)
    with pytest.raises(tftransfer.TransferError, match="has no layer names"):
        tftransfer.set_trainable(model, "block_3")
    assert tftransfer.set_trainable(model, 3) == 3
    assert [v.trainable for v in base.backbone.weights] == [False, True, True, True]


@pytest.mark.parametrize("per_class, variables", [(10, 0), (50, 0), (99, 0), (100, 2),
                                                  (200, 2), (600, 4)])
def test_auto_unfreeze_counts_a_hub_modules_variables(tmp_path, per_class, variables):
    from tftransfer.training.auto import auto_unfreeze

    base = tftransfer.load_base(str(write_two_conv_module(tmp_path / "module")))
    model = tftransfer.build_classifier(base, 3, augmentation=None)
    # None below 100 per class (an uncached top phase did not pay there); then
    # a half and all of its 4 fine-tunable variables.
    assert auto_unfreeze(model, per_class) == variables
