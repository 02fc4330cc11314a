"""Shared fixtures: tiny bases and tiny image folders, made offline."""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Feature caches written by tests stay out of the user's home.
os.environ["TFTRANSFER_CACHE_DIR"] = tempfile.mkdtemp(prefix="tftransfer-test-cache-")
# And the run records of `tftransfer train` stay out of the checkout.
os.environ["TFTRANSFER_RUNS_DIR"] = tempfile.mkdtemp(prefix="tftransfer-test-runs-")

import keras
import numpy as np
import pytest
from PIL import Image

from tftransfer.data.decode import NOT_DECODABLE

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


def write_hub_module(path, *, batch_norm=False, l2=0.0, size=32, signature_only=False):
    """Writes a TF2 reusable SavedModel, as TF Hub publishes image modules.

    The module maps `[0, 1]` images to 8 features: a 3x3 convolution,
    optionally batch normalization (moving statistics updated only with
    `training=True`), ReLU and average pooling. With `l2`, it has a
    regularization loss on its kernel. With `signature_only`, it has only a
    `serving_default` signature, like a TF1 hub module or a serving export.
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)
    obj = tf.train.Checkpoint()
    kernel = tf.Variable(rng.normal(0, 0.3, (3, 3, 3, 8)).astype("float32"),
                         name="conv/kernel")
    bias = tf.Variable(np.zeros(8, "float32"), name="conv/bias")
    mean = tf.Variable(np.full(8, 0.1, "float32"), trainable=False, name="bn/moving_mean")
    variance = tf.Variable(np.full(8, 0.9, "float32"), trainable=False,
                           name="bn/moving_variance")
    obj.kernel, obj.bias, obj.mean, obj.variance = kernel, bias, mean, variance

    def forward(images, training):
        x = tf.nn.conv2d(images, kernel, strides=2, padding="SAME") + bias
        if batch_norm:
            if training:
                batch_mean, batch_var = tf.nn.moments(x, [0, 1, 2])
                mean.assign(0.9 * mean + 0.1 * batch_mean)
                variance.assign(0.9 * variance + 0.1 * batch_var)
                x = (x - batch_mean) / tf.sqrt(batch_var + 1e-3)
            else:
                x = (x - mean) / tf.sqrt(variance + 1e-3)
        return tf.reduce_mean(tf.nn.relu(x), axis=[1, 2])

    spec = tf.TensorSpec([None, size, size, 3], tf.float32)
    if signature_only:
        serve = tf.function(lambda images: {"feature_vector": forward(images, False)},
                            input_signature=[spec])
        tf.saved_model.save(obj, str(path), signatures={"serving_default": serve})
        return path

    call = tf.function(forward)
    call.get_concrete_function(spec, True)
    call.get_concrete_function(spec, False)
    obj.__call__ = call
    obj.variables = [kernel, bias] + ([mean, variance] if batch_norm else [])
    obj.trainable_variables = [kernel, bias]
    obj.regularization_losses = (
        [tf.function(lambda: l2 * tf.reduce_sum(tf.square(kernel)), input_signature=[])]
        if l2 else [])
    tf.saved_model.save(obj, str(path))
    return path


@pytest.fixture(scope="session")
def hub_bn_module(tmp_path_factory):
    return write_hub_module(tmp_path_factory.mktemp("hub") / "bn", batch_norm=True)


@pytest.fixture(scope="session")
def hub_l2_module(tmp_path_factory):
    return write_hub_module(tmp_path_factory.mktemp("hub") / "l2", l2=0.5)


def write_bad_corpus(root):
    """Writes a folder of every kind of messy input a user's folder holds.

    Returns `(usable, skipped)`: the relative paths that must be used, and
    `{relative path: words its skip reason must contain}`.
    """
    import io

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    cats, dogs = root / "cats", root / "dogs"
    cats.mkdir(parents=True)
    dogs.mkdir()
    (root / "birds").mkdir()  # An empty class folder.
    usable = {
        "cats/plain.jpg": lambda p: rgb.save(p),
        "cats/with space.jpg": lambda p: rgb.save(p),
        "cats/ünïcødé 猫.png": lambda p: rgb.save(p),
        "cats/cmyk.jpg": lambda p: rgb.convert("CMYK").save(p),
        "cats/gray.jpg": lambda p: rgb.convert("L").save(p),
        "cats/sixteen_bit.png": lambda p: Image.fromarray(
            rng.integers(0, 65535, (30, 40)).astype(np.uint16)).save(p),
        "cats/paletted.png": lambda p: rgb.convert("P").save(p),
        "cats/alpha.png": lambda p: rgb.convert("RGBA").save(p),
        "cats/animated.gif": lambda p: rgb.save(p, save_all=True,
                                                append_images=[rgb.rotate(90)]),
        "cats/bitmap.bmp": lambda p: rgb.save(p),
        "cats/large.jpg": lambda p: Image.new("RGB", (3000, 2000), (90, 30, 200)).save(
            p, quality=30),
        "dogs/plain.png": lambda p: rgb.save(p),
        "dogs/nested/deeper.jpg": lambda p: rgb.save(p),
    }
    jpeg = io.BytesIO()
    rgb.save(jpeg, "JPEG")
    jpeg = jpeg.getvalue()
    skipped = {
        "dogs/truncated.jpg": (lambda p: p.write_bytes(jpeg[:len(jpeg) // 2]),
                               "cannot decode JPEG"),
        "dogs/zero.jpg": (lambda p: p.write_bytes(b""), "empty file"),
        "dogs/text.jpg": (lambda p: p.write_text("hello"), NOT_DECODABLE),
        # PIL is never asked to parse another format: it cannot name it.
        "dogs/tiff_inside.png": (lambda p: rgb.save(p, format="TIFF"), NOT_DECODABLE),
        "dogs/scan.tif": (lambda p: rgb.save(p), "not an image extension (.tif)"),
        "dogs/.hidden.jpg": (lambda p: rgb.save(p, format="JPEG"), "hidden file"),
        "dogs/.DS_Store": (lambda p: p.write_bytes(b"\0\1"), "hidden file"),
        "dogs/dangling.jpg": (lambda p: p.symlink_to(root / "nowhere.jpg"),
                              "broken or looping symlink"),
        "dogs/loop_a.jpg": (lambda p: (p.symlink_to(dogs / "loop_b.jpg"),
                                       (dogs / "loop_b.jpg").symlink_to(p)),
                            "broken or looping symlink"),
        "dogs/loop_b.jpg": (lambda p: None, "broken or looping symlink"),
        "dogs/nested/back_up": (lambda p: p.symlink_to(dogs, target_is_directory=True),
                                "symlink loop"),
    }
    for relative, write in usable.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    for relative, (write, _) in skipped.items():
        write(root / relative)
    return set(usable), {k: words for k, (_, words) in skipped.items()}


def labels_of(dataset):
    return np.concatenate([y.numpy() for _, y in dataset])


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "messy"
    usable, skipped = write_bad_corpus(root)
    return root, usable, skipped


def relative(root, paths):
    return {str(p)[len(str(root)) + 1:] for p in paths}


def write_one_image_per_class(root):
    """One file per class folder, so that a label names its file.

    JPEGs of several sizes need each DCT scale for a 24x24 target (1/8,
    1/4, 1/2 and full), progressive and with a large EXIF block; the other
    formats take the antialiased path.
    """
    rng = np.random.default_rng(1)

    def photo(height, width):
        small = rng.integers(0, 255, (max(height // 8, 1), max(width // 8, 1), 3),
                             dtype=np.uint8)
        return Image.fromarray(small).resize((width, height), Image.BILINEAR)

    exif = Image.Exif()
    exif[0x010E] = "x" * 30_000  # ImageDescription: pushes the frame header back.
    writers = {
        "a_scale8.jpg": lambda p: photo(200, 260).save(p, quality=90),
        "b_scale4.jpg": lambda p: photo(100, 130).save(p, quality=90),
        "c_scale2.jpg": lambda p: photo(50, 70).save(p, quality=90),
        "d_full.jpg": lambda p: photo(30, 47).save(p, quality=90),
        "e_progressive.jpg": lambda p: photo(120, 90).save(p, progressive=True),
        "f_exif.jpg": lambda p: photo(64, 64).save(p, exif=exif),
        "g_cmyk.jpg": lambda p: photo(60, 80).convert("CMYK").save(p),
        "h_big.png": lambda p: photo(90, 70).save(p),
        "i_gray.png": lambda p: photo(20, 20).convert("L").save(p),
        "j_anim.gif": lambda p: photo(40, 40).save(p, save_all=True,
                                                   append_images=[photo(40, 40)]),
        "k_bitmap.bmp": lambda p: photo(50, 30).save(p),
    }
    for name, write in writers.items():
        (root / name.split(".")[0]).mkdir(parents=True)
        write(root / name.split(".")[0] / name)
    return root


def tiny_dense_dataset():
    """40 rows of 6 features, 3 classes, in batches of 16, 16 and 8."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 16, 16, 8: uneven.


def tiny_dense_model():
    """A compiled two-layer model for `tiny_dense_dataset`, with a regularization loss."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="relu",
                           kernel_regularizer=keras.regularizers.L2(0.01)),
        keras.layers.Dense(3, activation="softmax")])
    from tftransfer.models.losses import SparseCategoricalCrossentropy

    model.compile(keras.optimizers.Adam(1e-2), SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    return model


AUDIT_OFFSETS = {"red": (50, -25, -25), "green": (-25, 50, -25), "blue": (-25, -25, 50)}


def audit_image(rng):
    """A 32x32 photo stand-in: a smooth random texture that no other image shares."""
    texture = rng.integers(40, 216, (4, 4, 3)).astype("uint8")
    return np.asarray(Image.fromarray(texture).resize((32, 32), Image.BILINEAR), np.int32)


def write_audit_folder(root, train=12, test=4, seed=0):
    """`root/{train,test}/<class>/<n>.png`: textures tinted by class, all distinct."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for name, offset in AUDIT_OFFSETS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(audit_image(rng) + offset, 0, 255).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{split}{i:02d}.png")
    return root


@pytest.fixture(scope="session")
def pixel_base_file(tmp_path_factory):
    """A base whose features are a 4x4 thumbnail of the centred pixels: photos
    that differ have features that differ, copies have nearly equal ones."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1.0, offset=-0.5)(inputs)
    x = keras.layers.AveragePooling2D(8)(x)
    model = keras.Model(inputs, keras.layers.Reshape((1, 1, 48))(x), name="thumbnail")
    path = tmp_path_factory.mktemp("bases") / "thumbnail.keras"
    model.save(path)
    return path


#: Multi-label test images: a stripe of each label's colour, over gray.
LABEL_COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 50, 220)}


def write_multi_label_csv(root, count=60, size=32, seed=0, name="labels.csv"):
    """Writes `root/images/<n>.png` and `root/<name>` (`path,labels`).

    Each label is present in an image, at random, as a vertical stripe of
    its colour in its third of the image; some images have no label.

    Returns:
        `(csv path, multi-hot labels)`.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = sorted(LABEL_COLORS)
    hot = (rng.random((count, len(names))) < 0.4).astype("float32")
    lines = ["path,labels"]
    third = size // 3
    for i, row in enumerate(hot):
        pixels = np.full((size, size, 3), 110.0) + rng.normal(0, 12, (size, size, 3))
        for j, label in enumerate(names):
            if row[j]:
                pixels[:, j * third:(j + 1) * third] = LABEL_COLORS[label]
        Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(
            root / "images" / f"{i:03d}.png")
        lines.append(f"images/{i:03d}.png," + " ".join(n for n, on in zip(names, row) if on))
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path, hot


@pytest.fixture(scope="session")
def multi_label_csv(tmp_path_factory):
    """A multi-label CSV of 60 images (red, green, blue stripes) and its labels."""
    return write_multi_label_csv(tmp_path_factory.mktemp("multi_label"))


@pytest.fixture(scope="session")
def multi_label_export(tmp_path_factory, tiny_base_file, multi_label_csv):
    """A multi-label classifier with set thresholds, and its SavedModel export.

    Returns:
        `(model, export base path)`.
    """
    import tftransfer
    from tftransfer.models.multi_label import set_thresholds

    keras.utils.set_random_seed(0)
    base = tftransfer.load_base(str(tiny_base_file), preprocessing="unit")
    model = tftransfer.build_classifier(base, 3, multi_label=True)
    set_thresholds(model, [0.45, 0.5, 0.55])
    folder = tmp_path_factory.mktemp("multi_label_export") / "exports"
    tftransfer.export_saved_model(model, folder, ["blue", "green", "red"])
    return model, folder


def serving_docs_code(heading):
    """The first Python block under `heading` in docs/serving.md, to run as the docs show it."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "serving.md").read_text()
    section = text[text.index(heading):]
    start = section.index("```python") + len("```python")
    return section[start:section.index("```", start)]
