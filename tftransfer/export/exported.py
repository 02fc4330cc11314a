"""One loader of an exported classifier, for `predict` and `evaluate`.

An export is a SavedModel version folder (or a base path, whose latest
version is read) from `export_saved_model`, or a `.tflite` file from
`export_tflite` with `labels.txt` beside it. `load_exported` reads either
into an `ExportedModel`, which answers decoded images and encoded image
files alike, with one set of error messages for what is missing.
"""

import dataclasses
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tftransfer.data.labels_file import LABELS_FILE, read_labels
from tftransfer.errors import TransferError
from tftransfer.export.model_versions import latest_version
from tftransfer.export.saved_model import export_thresholds
from tftransfer.export.tflite import TFLiteClassifier


@dataclasses.dataclass
class ExportedModel:
    """An exported classifier, ready to run.

    Attributes:
        path: The version folder or `.tflite` file read.
        input_size: `(height, width)` of the images it takes.
        class_names: Its class (or label) names, from `labels_path`; `None`
            if the export has none.
        labels_path: Where its `labels.txt` is (or would be).
        thresholds: A multi-label export's per-label thresholds, else `None`.
    """

    path: Path
    input_size: tuple
    class_names: Optional[list]
    labels_path: Path
    thresholds: Optional[np.ndarray]
    _images: Callable = dataclasses.field(repr=False)
    _files: Callable = dataclasses.field(repr=False)

    @property
    def multi_label(self) -> bool:
        """Whether it decides each label at its own threshold."""
        return self.thresholds is not None

    def predict_images(self, images) -> np.ndarray:
        """Probabilities for a batch of images: floats in `[0, 255]`, `[n, h, w, 3]`."""
        return np.asarray(self._images(images))

    def predict_files(self, contents: Sequence[bytes]) -> np.ndarray:
        """Probabilities for encoded image files (JPEG, PNG, ...), decoded as in serving.

        Raises:
            tf.errors.InvalidArgumentError: An image cannot be decoded.
        """
        return np.asarray(self._files(list(contents)))


def load_exported(path: Union[str, Path]) -> ExportedModel:
    """Reads an exported SavedModel or `.tflite` classifier.

    Args:
        path: A base path from `export_saved_model` (its latest version), a
            version folder, or a `.tflite` file.

    Returns:
        An `ExportedModel`.

    Raises:
        TransferError: `path` is not an export that tftransfer wrote, or it
            cannot be read; the message names the file at fault.
    """
    path = Path(path)
    if path.suffix == ".tflite":
        return _tflite(path)
    if not path.is_dir():
        raise TransferError(f"{path} is neither an export folder nor a .tflite file")
    version = latest_version(path)
    try:
        loaded = tf.saved_model.load(str(version))
    except (OSError, ValueError) as error:
        raise TransferError(f"cannot load the SavedModel {version}: {error}") from None
    thresholds = export_thresholds(version)  # First: its error names the file at fault.
    missing = {"serving_images", "serving_default"} - set(loaded.signatures)
    if missing:
        raise TransferError(f"{version} is a SavedModel that tftransfer did not export (no "
                            f"{' or '.join(sorted(missing))} signature); export the model "
                            "with tftransfer export, or use its .keras file")
    images, files = loaded.signatures["serving_images"], loaded.signatures["serving_default"]
    height, width = images.structured_input_signature[1]["images"].shape[1:3]
    labels = version / "assets" / LABELS_FILE
    return ExportedModel(
        version, (int(height), int(width)),
        read_labels(labels) if labels.is_file() else None, labels, thresholds,
        lambda batch: images(images=tf.cast(batch, tf.float32))["probabilities"].numpy(),
        lambda contents: files(image_bytes=tf.constant(contents))["probabilities"].numpy())


def _tflite(path):
    from tftransfer.data.decode import decode_image

    classifier = TFLiteClassifier(path)
    labels = path.with_name(LABELS_FILE)

    def files(contents):
        size = classifier.input_size
        return classifier.predict(np.stack([decode_image(tf.constant(c), size).numpy()
                                            for c in contents]))

    return ExportedModel(path, classifier.input_size,
                         read_labels(labels) if labels.is_file() else None, labels,
                         classifier.thresholds, classifier.predict, files)
