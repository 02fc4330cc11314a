"""Pretrains the bundled base and writes the demo target.

Reproduces the two things that ship with tftransfer, from Debian's
Fashion-MNIST (`apt-get install dataset-fashion-mnist`):

* `saved_models/fashion_mobilenet_v2.weights.h5`: MobileNetV2 (alpha 0.35,
  48x48) trained from scratch on classes 0-4 (T-shirt, trouser, pullover,
  dress, coat); the weights up to block 6 (`BUNDLED_OUTPUT_LAYER`) are
  kept and registered as the base `fashion_mobilenet_v2`;
* `tftransfer/demo_data/`: the demo target, classes 5-9 (sandal, shirt,
  sneaker, bag, ankle boot) as PNG class folders: 20 training and 10
  validation images per class from the training set, and 100 test images
  per class from the test set. The base never sees these classes.

Usage:
    python scripts/pretrain_bundled_base.py [--epochs 8] [--seed 0]

It also writes `saved_models/fashion_mobilenet_v2_hub/`, the same base as a
TF Hub-format SavedModel (`--hub-only` rewrites just that).
"""

import argparse
import gzip
import shutil
import time
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
ROOT = Path(__file__).resolve().parent.parent
BASE_CLASSES = [0, 1, 2, 3, 4]
DEMO_CLASSES = {5: "sandal", 6: "shirt", 7: "sneaker", 8: "bag", 9: "ankle_boot"}
DEMO_COUNTS = {"train": 20, "val": 10, "test": 100}


def read_idx(name):
    """Reads one gzipped IDX file of Fashion-MNIST into a numpy array."""
    with gzip.open(SOURCE / name) as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(split):
    prefix = "train" if split == "train" else "t10k"
    return (read_idx(f"{prefix}-images-idx3-ubyte.gz"),
            read_idx(f"{prefix}-labels-idx1-ubyte.gz"))


def write_demo_data(seed):
    from PIL import Image

    out = ROOT / "tftransfer" / "demo_data"
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(seed)
    train_x, train_y = load_split("train")
    test_x, test_y = load_split("test")
    for label, name in DEMO_CLASSES.items():
        train_idx = rng.permutation(np.flatnonzero(train_y == label))
        test_idx = rng.permutation(np.flatnonzero(test_y == label))
        picks = {
            "train": (train_x, train_idx[:DEMO_COUNTS["train"]]),
            "val": (train_x, train_idx[DEMO_COUNTS["train"]:
                                       DEMO_COUNTS["train"] + DEMO_COUNTS["val"]]),
            "test": (test_x, test_idx[:DEMO_COUNTS["test"]]),
        }
        for split, (images, indices) in picks.items():
            folder = out / split / name
            folder.mkdir(parents=True)
            for i in indices:
                Image.fromarray(images[i]).save(folder / f"{i:05d}.png", optimize=True)
    print(f"wrote the demo target to {out}")


def pretrain(epochs, seed, batch_size=128):
    import keras
    import tensorflow as tf

    import tftransfer
    from tftransfer.models.bases import (BUNDLED_BASE, BUNDLED_OUTPUT_LAYER, SAVED_MODELS_DIR,
                                         assemble_features)
    from tftransfer.models.builder import set_trainable_flag

    keras.utils.set_random_seed(seed)
    # Pretrain the whole network; the registered base keeps its bottom part.
    full = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35,
                                          input_shape=(48, 48, 3), pooling="avg")
    base = tftransfer.Base("pretraining", assemble_features(full, (48, 48), "tf"),
                           (48, 48), "tf")
    model = tftransfer.build_classifier(base, len(BASE_CLASSES), dropout=0.2)
    set_trainable_flag(model.get_layer("features"), True)  # BatchNorm included.
    for layer in full.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Keras' MobileNetV2 uses 0.999, far too slow for a short run.
            layer.momentum = 0.9

    def dataset(split, training):
        images, labels = load_split(split)
        keep = np.isin(labels, BASE_CLASSES)
        ds = tf.data.Dataset.from_tensor_slices((images[keep], labels[keep].astype("int32")))
        if training:
            ds = ds.shuffle(len(labels), seed=seed)

        def prepare(image, label):
            image = tf.image.grayscale_to_rgb(tf.cast(image[..., None], tf.float32))
            image = tf.image.resize(image, base.input_size)
            if training:
                image = tf.image.random_flip_left_right(image)
            return image, label

        return ds.map(prepare, tf.data.AUTOTUNE).batch(batch_size).prefetch(2)

    train = dataset("train", training=True)
    steps = epochs * int(train.cardinality())
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(2e-3, steps)),
        loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.time()
    model.fit(train, validation_data=dataset("test", training=False), epochs=epochs,
              verbose=2)
    # Batch statistics drift while the weights move; re-estimate the moving
    # statistics of the final weights so that inference matches training.
    for images, _ in train.take(100):
        model(images, training=True)
    print(f"pretraining took {time.time() - start:.0f} s")
    print("after recalibration:", model.evaluate(dataset("test", training=False),
                                                 verbose=0, return_dict=True))
    SAVED_MODELS_DIR.mkdir(exist_ok=True)
    path = SAVED_MODELS_DIR / f"{BUNDLED_BASE}.weights.h5"
    # The registered base is the network up to BUNDLED_OUTPUT_LAYER.
    keras.Model(full.input, full.get_layer(BUNDLED_OUTPUT_LAYER).output).save_weights(path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def write_hub_module():
    """Writes the bundled base again, as a TF Hub-format SavedModel."""
    import tftransfer
    from tftransfer.models.bases import BUNDLED_BASE, SAVED_MODELS_DIR
    from tftransfer.models.hub import save_hub_module

    base = tftransfer.load_base(BUNDLED_BASE)
    path = save_hub_module(base, SAVED_MODELS_DIR / f"{BUNDLED_BASE}_hub")
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-demo-data", action="store_true")
    parser.add_argument("--hub-only", action="store_true",
                        help="only rewrite the hub-format copy of the trained base")
    args = parser.parse_args()
    if not SOURCE.is_dir():
        raise SystemExit(f"{SOURCE} not found: apt-get install dataset-fashion-mnist")
    if not args.hub_only:
        if not args.skip_demo_data:
            write_demo_data(args.seed)
        pretrain(args.epochs, args.seed)
    write_hub_module()


if __name__ == "__main__":
    main()
