"""Export: a versioned SavedModel that TF Serving loads as is.

`export_saved_model` writes `directory/<version>/` with two signatures:

* `serving_default`: a batch of encoded images (`tf.string`: JPEG, PNG, GIF
  or BMP, any size), decoded and resized in the graph exactly as in
  training;
* `serving_images`: a float32 batch of RGB pixels in `[0, 255]` at the
  model's input size.

Both return `probabilities`, the `top_k` `classes` and `scores`, and the
`class_names` (repeated per image, so that TF Serving's row format works).
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from tftransfer.data import decode_image
from tftransfer.errors import TransferError

LABELS_FILE = "labels.txt"
METADATA_FILE = "metadata.json"


def export_saved_model(model, directory, class_names, *, version=None, top_k=5,
                       overwrite=False, metadata=None):
    """Writes a classifier as a TF Serving SavedModel version.

    The version is written to a temporary folder beside its final place and
    renamed into place, so a server polling `directory` never sees a
    partial version.

    Args:
        model: A Keras classifier from RGB `[0, 255]` images to probabilities.
        directory: The model's base path, holding one folder per version.
        class_names: One name per output, in label order.
        version: An int; defaults to one more than the highest present.
        top_k: How many classes the `classes` and `scores` outputs hold.
        overwrite: Replace an existing version instead of failing.
        metadata: A JSON-serializable dict stored in
            `assets.extra/metadata.json`, beside the class names and
            input size.

    Returns:
        The `Path` of the written version folder.

    Example:
    >>> export_saved_model(model, "exports/flowers", class_names)
    PosixPath('exports/flowers/1')
    """
    class_names = [str(name) for name in class_names]
    num_classes = int(model.output_shape[-1])
    if len(class_names) != num_classes:
        raise TransferError(f"{len(class_names)} class names for a model with "
                            f"{num_classes} outputs")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    version = next_version(directory) if version is None else int(version)
    target = directory / str(version)
    if target.exists() and not overwrite:
        raise TransferError(f"{target} already exists; pass overwrite=True "
                            "(--overwrite) or another version")

    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=directory))
    try:
        _write_saved_model(model, staging / "saved_model", class_names,
                           min(top_k, num_classes))
        extra = staging / "saved_model" / "assets.extra"
        extra.mkdir()
        (extra / METADATA_FILE).write_text(json.dumps(
            {"class_names": class_names,
             "input_size": list(model.input_shape[1:3]),
             "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
             **(metadata or {})}, indent=2))
        _replace(staging / "saved_model", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def next_version(directory):
    """Returns one more than the highest integer version in `directory`, or 1."""
    versions = [int(p.name) for p in Path(directory).iterdir()
                if p.is_dir() and p.name.isdigit()] if Path(directory).is_dir() else []
    return max(versions, default=0) + 1


def latest_version(directory):
    """Returns the path of the highest version under a model's base path.

    Args:
        directory: A base path from `export_saved_model`, or a version
            folder itself (returned as is).

    Returns:
        A `Path`.
    """
    directory = Path(directory)
    if (directory / "saved_model.pb").is_file():
        return directory
    version = next_version(directory) - 1
    if version < 1:
        raise TransferError(f"no SavedModel found in {directory}")
    return directory / str(version)


def _write_saved_model(model, path, class_names, top_k):
    height, width = model.input_shape[1:3]
    names = tf.constant(class_names)

    def outputs(images):
        probabilities = model(images, training=False)
        scores, indices = tf.math.top_k(probabilities, k=top_k)
        batch = tf.shape(probabilities)[0]
        return {
            "probabilities": probabilities,
            "scores": scores,
            "classes": tf.gather(names, indices),
            "class_names": tf.tile(names[tf.newaxis], [batch, 1]),
        }

    def serve_bytes(image_bytes):
        images = tf.map_fn(lambda b: decode_image(b, (height, width)), image_bytes,
                           fn_output_signature=tf.float32)
        return outputs(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", serve_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint(
        "serving_images", outputs,
        input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32,
                                       name="images")])
    archive.write_out(str(path), verbose=False)
    # TF Serving and Vertex AI read labels from the assets folder.
    (path / "assets").mkdir(exist_ok=True)
    (path / "assets" / LABELS_FILE).write_text("\n".join(class_names) + "\n")


def _replace(source, target):
    if not target.exists():
        os.rename(source, target)
        return
    trash = target.with_name(f".{target.name}-replaced")
    os.rename(target, trash)
    os.rename(source, target)
    shutil.rmtree(trash, ignore_errors=True)


def predict_files(model_dir, paths, *, top_k=3):
    """Classifies image files with an exported SavedModel.

    Args:
        model_dir: A base path from `export_saved_model` (its latest version
            is used) or a version folder.
        paths: Image files (JPEG, PNG, GIF or BMP).
        top_k: How many classes to return per image.

    Returns:
        A list of `(path, [(class_name, probability), ...])`, best first.

    Example:
    >>> predict_files("exports/flowers", ["rose.jpg"])
    [('rose.jpg', [('roses', 0.93), ('tulips', 0.05), ('daisy', 0.01)])]
    """
    from tftransfer.data import check_images

    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise TransferError(f"image not found: {', '.join(missing)}")
    _, skipped = check_images(paths)
    if skipped:
        raise TransferError("cannot read " + "; ".join(
            f"{path} ({reason})" for path, reason in skipped.items()))
    version = latest_version(model_dir)
    try:
        serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    except (OSError, KeyError, ValueError) as error:
        raise TransferError(f"cannot load a serving SavedModel from {version}: "
                            f"{error}") from None
    outputs = serve(image_bytes=tf.constant([Path(p).read_bytes() for p in paths]))
    probabilities = outputs["probabilities"].numpy()
    names = [n.decode() for n in outputs["class_names"].numpy()[0]]
    results = []
    for path, row in zip(paths, probabilities):
        best = row.argsort()[::-1][:top_k]
        results.append((str(path), [(names[i], float(row[i])) for i in best]))
    return results
