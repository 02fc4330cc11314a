"""Labels that are not exclusive: sigmoid heads, per-label thresholds and weights.

A multi-label classifier (`build_classifier(..., multi_label=True)`) ends
in one sigmoid per label instead of a softmax, trains on multi-hot labels
with binary cross-entropy, and decides each label by its own threshold:

* `choose_thresholds` picks, for each label, the threshold that maximises
  its F1 on the validation images, placed midway between the lowest score
  it calls positive and the highest one it does not, so that it does not
  sit on a validation image's score. A label with no positive validation
  image keeps 0.5.
* The thresholds live in the head's `LabelThresholds` layer, so they are
  saved with the model (`.keras`) and exported with it.
* `positive_weights` is the multi-label analogue of balanced class
  weights: each label's positives weigh `negatives / positives` (at least
  1, at most `MAX_POSITIVE_WEIGHT`), so that a rare label is not learnt
  as "always absent".
"""

from typing import Optional, Sequence

import keras
import numpy as np

from tftransfer.errors import TransferError

#: The threshold of a label until validation data chooses one.
DEFAULT_THRESHOLD = 0.5
#: The most a positive example of a rare label weighs in the loss: past
#: it, a label with one or two positives would dominate the training.
MAX_POSITIVE_WEIGHT = 10.0


@keras.saving.register_keras_serializable(package="tftransfer")
class LabelThresholds(keras.layers.Layer):
    """Passes probabilities through and holds each label's decision threshold.

    The thresholds are a non-trainable weight, so that `model.save` keeps
    them and the export reads them (`thresholds_of`).

    Args:
        num_labels: The number of labels.
    """

    def __init__(self, num_labels, **kwargs):
        super().__init__(**kwargs)
        self.num_labels = int(num_labels)
        self.thresholds = self.add_weight(
            shape=(self.num_labels,), initializer=keras.initializers.Constant(
                DEFAULT_THRESHOLD), trainable=False, name="thresholds", dtype="float32")

    def call(self, probabilities):
        return probabilities

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_labels": self.num_labels}


def _thresholds_layer(model):
    """The head's `LabelThresholds`, or `None`; `model` may be the head itself."""
    if model.name != "head":
        try:
            model = model.get_layer("head")
        except ValueError:
            return None
    return next((layer for layer in model.layers if isinstance(layer, LabelThresholds)), None)


def is_multi_label(model: keras.Model) -> bool:
    """Whether a classifier (or its head) from `build_classifier` is multi-label."""
    return _thresholds_layer(model) is not None


def thresholds_of(model: keras.Model) -> np.ndarray:
    """Returns the per-label thresholds of a multi-label classifier.

    Args:
        model: A classifier from `build_classifier(..., multi_label=True)`.

    Returns:
        A float32 array, one threshold per label.
    """
    layer = _thresholds_layer(model)
    if layer is None:
        raise TransferError(f"model {model.name!r} is not multi-label: it has no thresholds")
    return np.asarray(layer.thresholds.numpy(), np.float32)


def set_thresholds(model: keras.Model, thresholds: Sequence[float]) -> None:
    """Sets the per-label thresholds of a multi-label classifier.

    Args:
        model: A classifier from `build_classifier(..., multi_label=True)`.
        thresholds: One value in `(0, 1)` per label.
    """
    layer = _thresholds_layer(model)
    if layer is None:
        raise TransferError(f"model {model.name!r} is not multi-label: it has no thresholds")
    values = np.asarray(thresholds, np.float32).reshape(-1)
    if values.shape != (layer.num_labels,):
        raise TransferError(f"{values.size} thresholds for {layer.num_labels} labels")
    layer.thresholds.assign(values)


def choose_thresholds(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Chooses each label's threshold to maximise its F1 on held-out examples.

    For each label, the examples are ranked by score; every cut between
    two distinct scores is tried, and the one with the highest F1 (the
    fewest positives among equals) is kept. The threshold is the midpoint
    of the scores on either side of the cut (half the lowest score when
    every example is called positive). A label without positive examples
    keeps `DEFAULT_THRESHOLD`.

    Args:
        labels: Multi-hot labels, shape `[n, labels]`.
        probabilities: Predicted probabilities, the same shape.

    Returns:
        A float32 array of thresholds, one per label.

    Example:
    >>> choose_thresholds(np.array([[1], [1], [0], [0]]),
    ...                   np.array([[0.9], [0.3], [0.2], [0.1]])).round(2).tolist()
    [0.25]
    """
    labels = np.asarray(labels, np.float64)
    probabilities = np.asarray(probabilities, np.float64)
    if labels.shape != probabilities.shape or labels.ndim != 2:
        raise TransferError(f"labels {labels.shape} and probabilities "
                            f"{probabilities.shape} must both be [examples, labels]")
    return np.array([_best_threshold(labels[:, j] > 0.5, probabilities[:, j])
                     for j in range(labels.shape[1])], np.float32)


def _best_threshold(positive, scores):
    total = int(positive.sum())
    if total == 0:
        return DEFAULT_THRESHOLD
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], np.cumsum(positive[order])
    called = np.arange(1, len(scores) + 1)
    # A cut may only fall between distinct scores: equal scores go together.
    valid = np.append(ranked[:-1] > ranked[1:], True)
    f1 = np.where(valid, 2 * hits / (called + total), -1.0)
    cut = int(np.argmax(f1))
    below = ranked[cut + 1] if cut + 1 < len(ranked) else 0.0
    return float((ranked[cut] + below) / 2)


def positive_weights(counts: Sequence[int], rows: int) -> Optional[list]:
    """The weight of each label's positive examples in the loss, for rare labels.

    Args:
        counts: The training examples that carry each label.
        rows: The training examples.

    Returns:
        `[negatives / positives]` per label, clipped to `[1,
        MAX_POSITIVE_WEIGHT]` (1 for a label with no positive), or `None`
        when every weight would be 1.

    Example:
    >>> positive_weights([50, 10, 1], 100)
    [1.0, 9.0, 10.0]
    """
    counts = np.asarray(counts, np.float64)
    weights = np.where(counts > 0, (rows - counts) / np.maximum(counts, 1), 1.0)
    weights = np.clip(weights, 1.0, MAX_POSITIVE_WEIGHT)
    if np.all(weights == 1.0):
        return None
    return [float(w) for w in weights]
