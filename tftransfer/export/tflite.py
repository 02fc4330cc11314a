"""Export: TFLite files, and their check.

`export_tflite` writes TFLite models (float32, float16, dynamic-range or
full-integer quantization), `TFLiteClassifier` runs them and
`evaluate_tflite` measures their accuracy.
"""

import logging
import tempfile
from pathlib import Path

import numpy as np

import keras
import tensorflow as tf

from tftransfer import _atomic
from tftransfer.data.labels_file import LABELS_FILE, write_labels
from tftransfer.defaults import TFLITE_QUANTIZATIONS
from tftransfer.errors import TransferError
from tftransfer.export.saved_model import THRESHOLDS_FILE, export_thresholds
from tftransfer.metrics import mean_average_precision
from tftransfer.models.inference import predictions
from tftransfer.models.multi_label import is_multi_label, thresholds_of

logger = logging.getLogger("tftransfer")


def export_tflite(model, path, *, quantization="float32", representative_data=None,
                  class_names=None):
    """Writes a classifier as a TFLite model.

    Args:
        model: A Keras classifier from `[0, 255]` float32 images.
        path: The `.tflite` file to write.
        quantization: `"float32"` (none), `"float16"` (weights in float16),
            `"dynamic_range"` (int8 weights, float activations) or `"int8"`
            (full integer: uint8 input, int8 activations, uint8
            probabilities; needs `representative_data`).
        representative_data: `(images, labels)` batches that calibrate the
            activation ranges for `"int8"`; a hundred or so images suffice.
        class_names: If given, written to `labels.txt` beside the file and,
            with the `mediapipe` extra, into the file's metadata with the
            input's normalisation (see `tftransfer.export.tflite_metadata`), which
            MediaPipe Tasks' `ImageClassifier` reads.

    A multi-label model's file returns `probabilities` and `over_threshold`
    (1.0 where a label is over its threshold), and its thresholds are
    written to `thresholds.txt` beside it.

    Returns:
        The `Path` written.
    """
    if quantization not in TFLITE_QUANTIZATIONS:
        raise TransferError(f"unknown TFLite quantization {quantization!r}; choose from "
                            f"{', '.join(TFLITE_QUANTIZATIONS)}")
    if quantization == "int8" and representative_data is None:
        raise TransferError("int8 quantization needs representative_data (training "
                            "images) to calibrate activation ranges")
    height, width = model.input_shape[1:3]
    # Through a SavedModel, which freezes the variables into constants (a
    # concrete function keeps them as variables, which calibration rejects).
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", _tflite_outputs(model),
                         input_signature=[tf.TensorSpec([1, height, width, 3],
                                                        tf.float32, name="images")])
    with tempfile.TemporaryDirectory() as scratch:
        archive.write_out(scratch, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch,
                                                             signature_keys=["serve"])
        flatbuffer = _convert(converter, quantization, representative_data)
    if class_names is not None:
        flatbuffer = _with_metadata(flatbuffer, class_names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Each file staged, flushed and renamed into place: a reader sees the old
    # file or the new one, never half of one.
    _atomic.replace_file(path, lambda staging: staging.write_bytes(flatbuffer))
    if class_names is not None:
        write_labels(path.parent / LABELS_FILE, class_names)
    if is_multi_label(model):
        text = "".join(f"{t:.6g}\n" for t in thresholds_of(model))
        _atomic.replace_file(path.parent / THRESHOLDS_FILE,
                             lambda staging: staging.write_text(text))
    else:  # A leftover would make this single-label file read as multi-label.
        (path.parent / THRESHOLDS_FILE).unlink(missing_ok=True)
    return path


def _with_metadata(flatbuffer, class_names):
    """The model with image-classifier metadata, when the `mediapipe` extra is there."""
    from tftransfer.export.tflite_metadata import add_metadata, metadata_available

    if not metadata_available():
        logger.info("mediapipe is not installed: the .tflite file carries no metadata, which "
                    "MediaPipe Tasks needs (pip install 'tftransfer[mediapipe]')")
        return flatbuffer
    return add_metadata(flatbuffer, class_names)


def _tflite_outputs(model):
    """The TFLite signature's function: probabilities, and over which thresholds."""
    if not is_multi_label(model):
        return lambda images: model(images, training=False)
    thresholds = tf.constant(thresholds_of(model))

    def outputs(images):
        probabilities = model(images, training=False)
        return {"probabilities": probabilities,
                "over_threshold": tf.cast(probabilities >= thresholds, tf.float32)}

    return outputs


def _convert(converter, quantization, representative_data):
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        def samples():
            taken = 0
            for images, _ in representative_data:
                for image in images:
                    yield [tf.cast(image[tf.newaxis], tf.float32)]
                    taken += 1
                    if taken >= 200:
                        return

        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


def tflite_interpreter(path):
    """A TFLite interpreter for `path`: LiteRT's where it is installed, else TensorFlow's.

    `tf.lite.Interpreter` is deprecated in favour of LiteRT (`pip install
    'tftransfer[litert]'`, the `ai-edge-litert` package), the runtime that
    devices run; both take the same arguments and give the same answers.

    Args:
        path: A `.tflite` file.

    Returns:
        An interpreter with its tensors allocated.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        with warnings.catch_warnings():
            # Its deprecation warning names the LiteRT package that is not installed.
            warnings.simplefilter("ignore", UserWarning)
            interpreter = tf.lite.Interpreter(model_path=str(path))
    else:
        interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


class TFLiteClassifier:
    """Runs a `.tflite` classifier on float pixels in `[0, 255]`, with LiteRT where installed.

    Quantized inputs and outputs are converted with the model's own scale
    and zero point, so every variant takes and returns the same thing.

    Args:
        path: A `.tflite` file from `export_tflite`.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise TransferError(f"TFLite model not found: {self.path}")
        self._interpreter = tflite_interpreter(self.path)
        # By its signature, so that outputs are found by name, not by position.
        self._runner = self._interpreter.get_signature_runner()
        (self._input_name, self._input), = self._runner.get_input_details().items()
        self._outputs = self._runner.get_output_details()
        self._probabilities = ("probabilities" if "probabilities" in self._outputs
                               else next(iter(self._outputs)))
        self.thresholds = (export_thresholds(self.path) if "over_threshold" in self._outputs
                           else None)

    @property
    def input_size(self):
        """`(height, width)` of the model's input."""
        return tuple(int(d) for d in self._input["shape"][1:3])

    def outputs(self, images):
        """Returns every output, as floats, for a batch of `[0, 255]` images.

        Returns:
            `{name: array}`: `probabilities` (or the single output under its
            name), and `over_threshold` for a multi-label model.
        """
        rows = []
        for image in np.asarray(images, np.float32):
            answer = self._runner(**{self._input_name: _quantize(image[None], self._input)})
            rows.append({name: _dequantize(value, self._outputs[name])[0]
                         for name, value in answer.items()})
        return {name: np.stack([row[name] for row in rows]) for name in rows[0]}

    def predict(self, images):
        """Returns float probabilities for a batch of `[0, 255]` images."""
        return self.outputs(images)[self._probabilities]


def _quantize(values, details):
    scale, zero_point = details["quantization"]
    dtype = details["dtype"]
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        values = np.clip(np.round(values / scale + zero_point), info.min, info.max)
    return values.astype(dtype)


def _dequantize(values, details):
    scale, zero_point = details["quantization"]
    if np.issubdtype(values.dtype, np.integer) and scale:
        return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32)


def evaluate_tflite(path, dataset):
    """Returns the top-1 accuracy of a `.tflite` classifier on a dataset.

    Args:
        path: A `.tflite` file.
        dataset: `(images, labels)` batches; with multi-hot labels, the
            mean average precision is returned instead (see `label_report`).

    Returns:
        A float in `[0, 1]`.
    """
    return _score(TFLiteClassifier(path).predict, dataset)


def _score(predict, dataset):
    """Top-1 accuracy of `predict` on `dataset`, or mAP for multi-hot labels."""
    truth, scores = predictions(lambda images: predict(np.asarray(images)), dataset)
    if truth.ndim == 2 and truth.shape[1] > 1:
        return mean_average_precision(truth, scores) or 0.0
    return float(np.mean(scores.argmax(-1) == truth.reshape(-1)))


def export_tflite_variants(model, directory, *, validation, representative_data,
                           class_names, quantizations=TFLITE_QUANTIZATIONS):
    """Writes every TFLite variant and reports its size and accuracy.

    Args:
        model: The Keras classifier.
        directory: Where `model_<quantization>.tflite` files go.
        validation: Batches to measure accuracy on.
        representative_data: Training batches for `"int8"` calibration.
        class_names: Written to `labels.txt` in `directory`.
        quantizations: Which variants to write.

    Returns:
        A list of dicts with `quantization`, `path`, `bytes` and `accuracy`
        (for a multi-label model, the mean average precision), the first
        for the Keras model itself (`quantization="keras"`).
    """
    report = [{"quantization": "keras", "path": None, "bytes": None,
               "accuracy": _score(model.predict_on_batch, validation)}]
    for quantization in quantizations:
        path = export_tflite(model, Path(directory) / f"model_{quantization}.tflite",
                             quantization=quantization,
                             representative_data=representative_data,
                             class_names=class_names)
        report.append({"quantization": quantization, "path": str(path),
                       "bytes": path.stat().st_size,
                       "accuracy": evaluate_tflite(path, validation)})
    return report
