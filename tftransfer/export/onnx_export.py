"""ONNX export: a classifier as `model.onnx`, for ONNX Runtime and Triton's ONNX backend.

The model takes pixels as the Keras model does (float32 RGB in `[0, 255]`,
`[batch, height, width, 3]`, input `images`) and returns the class
probabilities; the class names are in the model's metadata, key `labels`,
one per line. Conversion is by `tf2onnx` (`pip install "tftransfer[onnx]"`)
on the model's inference function, so training-only layers (augmentation,
dropout) leave nothing in the graph. With `onnxruntime` installed, the file
is loaded once after writing, so that an operator ONNX cannot run is found
here, named with the layer it comes from, and not in production.
"""

from pathlib import Path
from typing import Sequence, Union

import keras
import tensorflow as tf

from tftransfer import _atomic
from tftransfer.errors import TransferError

#: The ONNX opset written: run by ONNX Runtime 1.14 and newer.
OPSET = 17


def export_onnx(model: keras.Model, path: Union[str, Path],
                class_names: Sequence[str]) -> Path:
    """Writes a classifier as an ONNX model with its labels in the metadata.

    Args:
        model: A Keras classifier from `[0, 255]` float32 images.
        path: The `.onnx` file to write.
        class_names: One name per output, written to the metadata key
            `labels`, one per line.

    Returns:
        The `Path` written.

    Raises:
        TransferError: `tf2onnx` is missing, or cannot convert a layer (named).
    """
    try:
        import onnx
        import tf2onnx
    except ImportError:
        raise TransferError('ONNX export needs tf2onnx: pip install "tftransfer[onnx]"') from None
    if len(class_names) != int(model.output_shape[-1]):
        raise TransferError(f"{len(class_names)} class names for a model with "
                            f"{model.output_shape[-1]} outputs")
    height, width = model.input_shape[1:3]
    function = tf.function(lambda images: model(images, training=False))
    spec = [tf.TensorSpec((None, height, width, 3), tf.float32, name="images")]
    try:
        proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=OPSET)
    except Exception as error:  # noqa: BLE001  (tf2onnx raises many kinds)
        raise TransferError(f"tf2onnx cannot convert {model.name!r}: "
                            f"{_with_layer(str(error))}") from None
    entry = proto.metadata_props.add()
    entry.key, entry.value = "labels", "\n".join(map(str, class_names))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(staging):
        onnx.save(proto, str(staging))
        _check_runs(staging)  # Before the rename: a file that fails never replaces one.

    _atomic.replace_file(path, write)
    return path


def _check_runs(path):
    try:
        import onnxruntime
    except ImportError:
        return
    try:
        onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001  (ONNX Runtime's errors have no common base)
        raise TransferError(f"ONNX Runtime cannot run the converted model: "
                            f"{_with_layer(str(error))}") from None


def _with_layer(message):
    """The message, with the Keras layer that a TF node name like
    `classifier_1/augmentation_1/flip_1/...` comes from, where one is named."""
    import re

    node = re.search(r"\b([A-Za-z_][\w.-]*(?:/[\w.-]+){2,})", message)
    if not node:
        return message
    parts = node.group(1).split("/")
    layer = re.sub(r"_\d+$", "", parts[1])
    return f"the layer {layer!r} ({node.group(1)}): {message.splitlines()[0][:300]}"
