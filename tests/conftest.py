"""Shared fixtures: tiny bases and tiny image folders, made offline."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from PIL import Image

CLASS_COLORS = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (50, 60, 210)}


def write_image_folder(root, images_per_class=8, size=(40, 36), fmt="png", seed=0):
    """Writes `root/<class>/<n>.<fmt>`: noisy images, one color per class."""
    rng = np.random.default_rng(seed)
    for name, color in CLASS_COLORS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            noise = rng.integers(-40, 40, (size[1], size[0], 3))
            pixels = np.clip(np.array(color) + noise, 0, 255).astype("uint8")
            Image.fromarray(pixels).save(folder / f"{i:03d}.{fmt}")
    return root


def make_tiny_backbone(input_size=(32, 32), seed=0):
    """A small convolutional backbone with BatchNormalization, 9 layers."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*input_size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.Conv2D(16, 3, name="conv3")(x)
    x = keras.layers.BatchNormalization(name="bn3")(x)
    x = keras.layers.ReLU(name="relu3")(x)
    return keras.Model(inputs, x, name="tiny_backbone")


@pytest.fixture(scope="session")
def tiny_base_file(tmp_path_factory):
    """A `.keras` file holding a tiny backbone with non-trivial BN statistics."""
    model = make_tiny_backbone()
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
    path = tmp_path_factory.mktemp("bases") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture
def tiny_base(tiny_base_file):
    import tftransfer

    return tftransfer.load_base(str(tiny_base_file), preprocessing="unit")


@pytest.fixture(scope="session")
def image_folder_path(tmp_path_factory):
    """Three color classes, 8 PNGs each, in plain class folders."""
    return write_image_folder(tmp_path_factory.mktemp("images") / "colors")


@pytest.fixture(scope="session")
def split_folder_path(tmp_path_factory):
    """Three color classes in train/ (6 each), val/ (3) and test/ (3) folders."""
    root = tmp_path_factory.mktemp("images") / "split"
    write_image_folder(root / "train", 6, seed=1)
    write_image_folder(root / "val", 3, seed=2)
    write_image_folder(root / "test", 3, fmt="jpg", seed=3)
    return root
