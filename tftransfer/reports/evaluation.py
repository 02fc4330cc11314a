"""What a classifier learned: per-class metrics, confusions, calibration, top losses.

`evaluate` scores a Keras model, an exported SavedModel or a `.tflite` file
on labelled images in one pass and returns a `Report`; `Report.save`
writes `report.json` and, through `tftransfer.reports.report_page`, `report.html`.
The metrics are computed here with numpy, from the labels and the
predicted probabilities, so that every number can be checked by hand:

* precision of a class = correct predictions of it / all predictions of it
  (defined as 0 when it is never predicted, with a note);
* recall = correct predictions of it / its examples (0 when it has none);
* F1 = their harmonic mean (0 when both are 0);
* the macro average weighs each class present in the data alike, the
  weighted average by its support;
* expected calibration error (Guo et al., 2017): over 10 equal-width bins
  of confidence, the mean |accuracy - confidence| weighted by bin size.
"""

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

from tftransfer.defaults import TOP_K
from tftransfer.errors import TransferError
from tftransfer.metrics import scores_of_counts

if TYPE_CHECKING:  # For the annotations only: the functions import them where they use them.
    import keras
    import tensorflow as tf

    from tftransfer.reports.label_report import LabelReport


#: The keys of `report.json`, in order.
REPORT_KEYS = ("accuracy", "top_k_accuracy", "per_class", "confusion_matrix",
               "expected_calibration_error", "top_losses", "class_names", "num_examples",
               "skipped")


@dataclasses.dataclass
class Report:
    """An evaluation of a classifier on labelled examples.

    Attributes:
        accuracy: The fraction of examples whose top class is right.
        top_k_accuracy: `{"k": k, "accuracy": a}`: the fraction whose
            class is among the top k.
        per_class: `{class_name: {"precision", "recall", "f1", "support"}}`,
            plus `"macro avg"` and `"weighted avg"`. A class that is never
            predicted, or absent from the data, has a `"note"` saying so.
        confusion_matrix: Counts, rows the true class, columns the predicted.
        expected_calibration_error: See the module docstring.
        top_losses: The most confidently wrong examples, worst first, each
            `{"index", "file", "true", "predicted", "confidence", "loss"}`.
        class_names: Class names in label order.
        num_examples: The number of examples scored.
        skipped: `{path: reason}` of the files that `evaluate` could not
            read, so were not scored.
        reliability: Per confidence bin: `{"confidence", "accuracy",
            "count"}`, for the reliability diagram (not in `report.json`).
    """

    accuracy: float
    top_k_accuracy: dict
    per_class: dict
    confusion_matrix: list
    expected_calibration_error: float
    top_losses: list
    class_names: list
    num_examples: int
    skipped: dict = dataclasses.field(default_factory=dict)
    reliability: list = dataclasses.field(default_factory=list, repr=False)

    def to_dict(self):
        """Returns exactly the keys of `report.json` (`REPORT_KEYS`)."""
        return {key: getattr(self, key) for key in REPORT_KEYS}

    def save(self, folder, *, history=None, images=None, title="Evaluation report",
             notes=()):
        """Writes `report.json`, `report.html` and its PNGs into `folder`.

        Args:
            folder: The output folder; created if missing.
            history: A `FineTuneHistory`, to plot both phases' curves.
            images: `{index: uint8 HxWx3 array}` for the top losses'
                thumbnails (default: read from their files).
            title: The page's title.
            notes: Warnings to show at the top of the page (a leak between
                the splits, say).

        Returns:
            The path of `report.html`.
        """
        from tftransfer.reports.report_page import write_report_page

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)  # Before report.json goes in.
        (folder / "report.json").write_text(json.dumps(self.to_dict(), indent=1))
        return write_report_page(self, folder, history=history, images=images,
                                 title=title, notes=notes)

    def summary(self):
        """One line: accuracy, top-k accuracy, macro F1, calibration error."""
        return (f"accuracy {self.accuracy:.4f}, top-{self.top_k_accuracy['k']} "
                f"{self.top_k_accuracy['accuracy']:.4f}, macro F1 "
                f"{self.per_class['macro avg']['f1']:.4f}, ECE "
                f"{self.expected_calibration_error:.4f} on {self.num_examples} examples")


def classification_report(labels, probabilities, class_names, *, files=None, top_k=TOP_K,
                          num_top_losses=16, bins=10):
    """Computes a `Report` from true labels and predicted probabilities.

    Args:
        labels: Int class indices, shape `[n]`.
        probabilities: Predicted class probabilities, shape `[n, classes]`.
        class_names: The class names, in label order.
        files: The file of each example, for `top_losses`, or `None`.
        top_k: The k of `top_k_accuracy` (at most the number of classes).
        num_top_losses: How many confidently wrong examples to keep.
        bins: Confidence bins for the calibration error.

    Returns:
        A `Report`.

    Example:
    >>> report = classification_report([0, 1, 1], [[0.9, 0.1], [0.2, 0.8],
    ...                                            [0.6, 0.4]], ["cat", "dog"])
    >>> round(report.accuracy, 4), report.confusion_matrix
    (0.6667, [[1, 0], [1, 1]])
    """
    labels = np.asarray(labels, np.int64).reshape(-1)
    probabilities = np.asarray(probabilities, np.float64)
    classes = len(class_names)
    if probabilities.ndim != 2 or probabilities.shape != (len(labels), classes):
        raise TransferError(f"probabilities have shape {probabilities.shape}; expected "
                            f"({len(labels)}, {classes}) for {classes} class names")
    if len(labels) == 0:
        raise TransferError("there are no examples to evaluate")
    if labels.min() < 0 or labels.max() >= classes:
        raise TransferError(f"labels must be in [0, {classes}); got {labels.min()}.."
                            f"{labels.max()}")
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    k = min(top_k, classes)
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    reliability, ece = _calibration(probabilities.max(axis=1), predicted == labels, bins)
    return Report(
        accuracy=float(np.mean(predicted == labels)),
        top_k_accuracy={"k": k, "accuracy": float(np.mean((top == labels[:, None]).any(1)))},
        per_class=_per_class(confusion, list(class_names)),
        confusion_matrix=confusion.tolist(),
        expected_calibration_error=ece,
        top_losses=_top_losses(labels, probabilities, predicted, class_names, files,
                               num_top_losses),
        class_names=list(class_names),
        num_examples=int(len(labels)),
        reliability=reliability)


def _per_class(confusion, class_names):
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    correct = np.diag(confusion)
    rows = {}
    for i, name in enumerate(class_names):
        row = scores_of_counts(int(correct[i]), int(predicted[i]), int(support[i]))
        notes = []
        if not support[i]:
            notes.append("absent from the data: recall set to 0, left out of the "
                         "averages")
        if not predicted[i]:
            notes.append("never predicted: precision set to 0")
        if notes:
            row["note"] = "; ".join(notes)
        rows[name] = row
    present = [rows[name] for i, name in enumerate(class_names) if support[i]]
    total = sum(row["support"] for row in present)
    for average, weights in (("macro avg", [1.0] * len(present)),
                             ("weighted avg", [row["support"] for row in present])):
        norm = sum(weights)
        rows[average] = {metric: float(sum(w * row[metric] for w, row in zip(weights, present))
                                       / norm) for metric in ("precision", "recall", "f1")}
        rows[average]["support"] = int(total)
    return rows


def _calibration(confidence, correct, bins):
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bins are (low, high]; a confidence of exactly 0 joins the first.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    reliability, ece = [], 0.0
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        if not count:
            continue
        accuracy, mean_confidence = float(correct[members].mean()), float(
            confidence[members].mean())
        ece += count / len(confidence) * abs(accuracy - mean_confidence)
        reliability.append({"low": float(edges[b]), "high": float(edges[b + 1]),
                            "confidence": mean_confidence, "accuracy": accuracy,
                            "count": count})
    return reliability, float(ece)


def _top_losses(labels, probabilities, predicted, class_names, files, count):
    wrong = np.flatnonzero(predicted != labels)
    true_probability = probabilities[np.arange(len(labels)), labels]
    losses = -np.log(np.clip(true_probability, 1e-12, 1.0))
    worst = wrong[np.argsort(-losses[wrong], kind="stable")][:count]
    return [{"index": int(i), "file": str(files[i]) if files is not None else None,
             "true": class_names[labels[i]], "predicted": class_names[predicted[i]],
             "confidence": float(probabilities[i, predicted[i]]),
             "loss": float(losses[i])} for i in worst]


def evaluate(model: Union["keras.Model", str, Path], data: Union["tf.data.Dataset", str, Path],
             class_names: Optional[Sequence[str]] = None, *, top_k: int = TOP_K,
             num_top_losses: int = 16,
             safe_mode: bool = True) -> Union["Report", "LabelReport"]:
    """Scores a classifier on labelled images in one pass.

    A multi-label model (see `build_classifier`) is scored with its
    per-label thresholds into a `label_report.LabelReport`.

    Args:
        model: A Keras classifier, an exported SavedModel (its base folder
            or a version folder), or a `.tflite` file.
        data: `(images, labels)` batches (a `tf.data.Dataset`), or a path
            that `load_data` reads at the model's input size (its `test/`
            split if it has one, else every image), or a multi-label CSV
            (every image in it).
        class_names: The class names (default: the data's, or the
            export's `labels.txt`).
        top_k: The k of `top_k_accuracy`.
        num_top_losses: How many confidently wrong images to keep.
        safe_mode: Load a `.keras` file in Keras's safe mode (see
            `saving.load_model`); `False` only for a file you trust.

    Returns:
        A `Report`. When `data` is a path, or batches from `load_data`,
        each top loss names its file.
    """
    from tftransfer.data.loader import source_files
    from tftransfer.models.inference import predictions

    predictor = _predictor(model, safe_mode)
    dataset, data_names, skipped = _dataset(data, predictor.input_size)
    labels, probabilities = predictions(predictor.predict, dataset)
    if not len(probabilities):
        raise TransferError("the evaluation data is empty")
    names = class_names or predictor.class_names
    if predictor.multi_label:
        report = _label_report(labels, probabilities, names, data_names, predictor,
                               source_files(dataset), num_top_losses)
    else:
        if names and data_names:
            labels = labels_by_name(labels, data_names, names)
        report = classification_report(
            labels, probabilities,
            list(names or data_names or [str(i) for i in range(probabilities.shape[1])]),
            files=source_files(dataset), top_k=top_k, num_top_losses=num_top_losses)
    report.skipped = skipped
    return report


def _label_report(labels, probabilities, names, data_names, predictor, files,
                  num_top_losses):
    """`evaluate`'s `LabelReport`, the data's label columns matched to the model's by name."""
    from tftransfer.reports.label_report import multi_label_report

    if labels.ndim != 2:
        raise TransferError("the model is multi-label but the data has one label per image; "
                            "evaluate it on a CSV with a 'labels' column")
    if names and data_names:
        index = labels_by_name(np.arange(len(data_names)), data_names, names)
        renumbered = np.zeros((len(labels), len(names)), labels.dtype)
        renumbered[:, index] = labels
        labels = renumbered
    names = list(names or data_names or [str(i) for i in range(probabilities.shape[1])])
    return multi_label_report(labels, probabilities, names, predictor.thresholds,
                              files=files, num_top_losses=num_top_losses)


def labels_by_name(labels: np.ndarray, data_names: Sequence[str],
                   model_names: Sequence[str]) -> np.ndarray:
    """The data's labels renumbered as the model numbers the same class names.

    A folder names its classes by its subfolders, sorted; the model by its
    training data's. Matching them by name keeps a folder with fewer
    classes, or the same ones in another order, from being scored against
    the wrong outputs. A model class with no image in the data is reported
    as absent by `classification_report`.

    Args:
        labels: The data's integer labels.
        data_names: The data's class names, in its label order.
        model_names: The model's class names, in output order.

    Returns:
        The labels as indices into `model_names`.

    Raises:
        TransferError: A class of the data that the model does not know.

    Example:
    >>> labels_by_name(np.array([0, 1, 1]), ["cat", "dog"], ["dog", "bird", "cat"]).tolist()
    [2, 0, 0]
    """
    model_names = [str(name) for name in model_names]
    unknown = [str(name) for name in data_names if str(name) not in model_names]
    if unknown:
        raise TransferError(f"the data has class(es) that the model does not know: "
                            f"{', '.join(unknown)} (the model knows "
                            f"{', '.join(model_names)})")
    mapping = np.array([model_names.index(str(name)) for name in data_names], np.int64)
    return mapping[np.asarray(labels, np.int64)]


def renumbered(dataset: "tf.data.Dataset", data_names: Sequence[str],
               model_names: Sequence[str]) -> "tf.data.Dataset":
    """`(images, labels)` batches with labels numbered as the model numbers its classes.

    Args:
        dataset: Batches labelled in the data's order of `data_names`.
        data_names, model_names: As in `labels_by_name`.

    Returns:
        The batches relabelled (multi-hot rows: their columns moved).
    """
    import tensorflow as tf

    mapping = labels_by_name(np.arange(len(data_names)), data_names, model_names)
    if dataset.element_spec[1].shape.rank == 2:  # Multi-hot rows: their columns move.
        if len(data_names) != len(model_names):
            raise TransferError(f"the data has {len(data_names)} labels, the model "
                                f"{len(model_names)}: {', '.join(model_names)}")
        columns = tf.constant(np.argsort(mapping))
        return dataset.map(lambda x, y: (x, tf.gather(y, columns, axis=1)))
    mapping = tf.constant(mapping)
    return dataset.map(lambda x, y: (x, tf.gather(mapping, tf.cast(y, tf.int64))))


@dataclasses.dataclass
class _Predictor:
    predict: object
    input_size: tuple
    class_names: Optional[list] = None
    thresholds: Optional[np.ndarray] = None  # A multi-label model's.

    @property
    def multi_label(self):
        return self.thresholds is not None


def _predictor(model, safe_mode=True):
    import keras

    if isinstance(model, keras.Model):
        from tftransfer.models.inference import inference
        from tftransfer.models.multi_label import is_multi_label, thresholds_of

        call = inference(model)
        return _Predictor(lambda images: call(images).numpy(),
                          tuple(model.input_shape[1:3]),
                          thresholds=thresholds_of(model) if is_multi_label(model) else None)
    path = Path(model)
    if path.suffix == ".keras" and path.is_file():
        from tftransfer.models.saving import load_model

        return _predictor(load_model(path, safe_mode=safe_mode))
    if path.suffix == ".tflite" or path.is_dir():
        from tftransfer.export.exported import load_exported

        exported = load_exported(path)
        return _Predictor(exported.predict_images, exported.input_size,
                          exported.class_names, exported.thresholds)
    raise TransferError(f"cannot evaluate {path}: not a Keras model, a SavedModel "
                        "folder, a .keras file or a .tflite file")


def _dataset(data, input_size):
    if isinstance(data, (str, Path)):
        from tftransfer.data.sources import evaluation_images

        if str(data).lower().endswith(".csv") and Path(data).is_file():
            from tftransfer.data.multi_hot import is_multi_label_csv, multi_label_evaluation

            if is_multi_label_csv(data):
                return multi_label_evaluation(data, input_size)
        if not Path(data).is_dir():
            raise TransferError(f"the evaluation data {data} is not a folder of class "
                                "subfolders or a multi-label CSV ('path,labels' header); "
                                "pass a tf.data.Dataset for other sources")
        return evaluation_images(data, input_size)
    return data, None, {}
