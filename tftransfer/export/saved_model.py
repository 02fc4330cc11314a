"""Export: a versioned SavedModel that TF Serving loads as is.

`export_saved_model` writes `directory/<version>/` with two signatures:

* `serving_default`: a batch of encoded images (`tf.string`: JPEG, PNG, GIF
  or BMP, any size), decoded and resized in the graph exactly as in
  training;
* `serving_images`: a float32 batch of RGB pixels in `[0, 255]` at the
  model's input size; `serving_images_uint8` the same as uint8.

All return `probabilities`, the `top_k` `classes` and `scores`, and the
`class_names` (repeated per image, so that TF Serving's row format works).
A multi-label model's also return `over_threshold` (a bool per label),
`labels` (each label's name where it is over its threshold, else `""`) and
the `thresholds`.
`assets/labels.txt` holds the class names; `assets.extra/` holds
`metadata.json` and TF Serving warmup requests.
"""

import json
import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

import keras
import tensorflow as tf

from tftransfer import _atomic
from tftransfer.data import decode_image
from tftransfer.data.labels_file import LABELS_FILE, write_labels
from tftransfer.defaults import MAX_PIXELS, TOP_K
from tftransfer.errors import TransferError
from tftransfer.export.model_versions import check_export_target
from tftransfer.models.multi_label import is_multi_label, thresholds_of

#: Beside a multi-label `.tflite` file: each label's threshold, a line each.
THRESHOLDS_FILE = "thresholds.txt"
METADATA_FILE = "metadata.json"
WARMUP_FILE = "tf_serving_warmup_requests"

logger = logging.getLogger("tftransfer")


def export_saved_model(model: keras.Model, directory: Union[str, Path],
                       class_names: Sequence[str], *, version: Optional[int] = None,
                       top_k: int = TOP_K, overwrite: bool = False,
                       metadata: Optional[dict] = None,
                       max_pixels: int = MAX_PIXELS) -> Path:
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
        max_pixels: `serving_default` refuses an image of more pixels
            (width x height x GIF frames, read from its header) with
            `InvalidArgument`, before decoding it (see `data.decode`).

    Returns:
        The `Path` of the written version folder.
    """
    class_names = [str(name) for name in class_names]
    num_classes = int(model.output_shape[-1])
    if len(class_names) != num_classes:
        raise TransferError(f"{len(class_names)} class names for a model with "
                            f"{num_classes} outputs")
    target = check_export_target(directory, version, overwrite)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    chosen = version is not None

    def write(staging):
        _write_saved_model(model, staging, class_names, min(top_k, num_classes), max_pixels)
        extra = staging / "assets.extra"
        extra.mkdir()
        (extra / METADATA_FILE).write_text(json.dumps(
            {"class_names": class_names, **_label_metadata(model),
             "input_size": list(model.input_shape[1:3]), "max_pixels": int(max_pixels),
             "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
             **(metadata or {})}, indent=2, default=float))
        write_warmup_requests(extra / WARMUP_FILE, model.input_shape[1:3])

    # The staging folder's name is not a number, so TF Serving ignores it.
    # Another export that took the next version first only moves this one on.
    published = _atomic.publish_folder(
        target, write, replace=overwrite,
        next_entry=None if chosen else lambda taken: directory / str(int(taken.name) + 1))
    if published is None:
        raise TransferError(f"{target} was written by another process meanwhile; pass "
                            "overwrite=True (--overwrite) or another version")
    return published


def _label_metadata(model):
    """`{"multi_label": True, "thresholds": [...]}` for a multi-label model, else `{}`."""
    if not is_multi_label(model):
        return {}
    return {"multi_label": True, "thresholds": thresholds_of(model).tolist()}


def export_thresholds(path: Union[str, Path]) -> Optional[np.ndarray]:
    """The per-label thresholds of a multi-label export, or `None` for one label per image.

    Args:
        path: A SavedModel version folder (its `assets.extra/metadata.json`)
            or a `.tflite` file (its `thresholds.txt` beside it).

    Returns:
        A float32 array, one threshold per label, or `None`.
    """
    path = Path(path)
    if path.suffix == ".tflite":
        beside = path.with_name(THRESHOLDS_FILE)
        try:
            return (np.array(beside.read_text().split(), np.float32) if beside.is_file()
                    else None)
        except ValueError:
            raise TransferError(f"{beside}: expected one number per line") from None
    metadata = path / "assets.extra" / METADATA_FILE
    try:
        recorded = json.loads(metadata.read_text()) if metadata.is_file() else {}
        return (np.asarray(recorded["thresholds"], np.float32)
                if recorded.get("multi_label") else None)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise TransferError(f"{metadata} is malformed ({type(error).__name__}: {error}); "
                            "export the model again") from None


def _write_saved_model(model, path, class_names, top_k, max_pixels=MAX_PIXELS):
    height, width = model.input_shape[1:3]
    names = tf.constant(class_names)
    thresholds = tf.constant(thresholds_of(model)) if is_multi_label(model) else None

    def outputs(images):
        probabilities = model(images, training=False)
        scores, indices = tf.math.top_k(probabilities, k=top_k)
        batch = tf.shape(probabilities)[0]
        every_name = tf.tile(names[tf.newaxis], [batch, 1])
        result = {
            "probabilities": probabilities,
            "scores": scores,
            "classes": tf.gather(names, indices),
            "class_names": every_name,
        }
        if thresholds is not None:
            over = probabilities >= thresholds
            result.update(over_threshold=over,
                          labels=tf.where(over, every_name, tf.zeros_like(every_name)),
                          thresholds=tf.tile(thresholds[tf.newaxis], [batch, 1]))
        return result

    def serve_bytes(image_bytes):
        images = tf.map_fn(lambda b: decode_image(b, (height, width), max_pixels), image_bytes,
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
    archive.add_endpoint(
        "serving_images_uint8", lambda images: outputs(tf.cast(images, tf.float32)),
        input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8,
                                       name="images")])
    archive.write_out(str(path), verbose=False)
    # TF Serving and Vertex AI read labels from the assets folder.
    (path / "assets").mkdir(exist_ok=True)
    write_labels(path / "assets" / LABELS_FILE, class_names)


def write_warmup_requests(path, image_size, count=2):
    """Writes TF Serving warmup requests for the `serving_default` signature.

    TF Serving replays `assets.extra/tf_serving_warmup_requests` when it
    loads a version, so the first real request does not pay for graph
    initialization. The records are `PredictionLog` protos of the
    `tensorflow-serving-api` package; without it, nothing is written.

    Args:
        path: The file to write.
        image_size: `(height, width)` of the generated JPEG and PNG images.
        count: Requests to write.

    Returns:
        `True` if the file was written.
    """
    try:
        from tensorflow_serving.apis import (model_pb2, predict_pb2,
                                             prediction_log_pb2)
    except ImportError:
        logger.info("tensorflow-serving-api is not installed; no warmup requests "
                    "written (pip install 'tftransfer[serving]')")
        return False
    gray = tf.fill([*image_size, 3], tf.constant(128, tf.uint8))
    images = [tf.io.encode_jpeg(gray).numpy(), tf.io.encode_png(gray).numpy()]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(count):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name="serving_default"))
            request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return True
