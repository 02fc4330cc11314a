"""Per-label thresholds, positive weights and the sigmoid head's thresholds layer."""

import numpy as np
import pytest

import tftransfer
from tftransfer.errors import TransferError
from tftransfer.models.builder import build_head
from tftransfer.models.multi_label import (DEFAULT_THRESHOLD, MAX_POSITIVE_WEIGHT,
                                           choose_thresholds, is_multi_label, positive_weights,
                                           set_thresholds, thresholds_of)


def test_threshold_maximises_f1_and_sits_midway_between_scores():
    # Ranked: 0.9 (pos), 0.7 (neg), 0.6 (pos), 0.2 (neg). Cuts: after 0.9, F1 = 2/3;
    # after 0.6, tp 2 of 3 called, F1 = 4/5: the best. Midway 0.6 and 0.2 is 0.4.
    labels = np.array([[1], [0], [1], [0]])
    scores = np.array([[0.9], [0.7], [0.6], [0.2]])
    assert choose_thresholds(labels, scores)[0] == pytest.approx(0.4)


def test_each_label_gets_its_own_threshold():
    labels = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    scores = np.array([[0.8, 0.1], [0.7, 0.05], [0.3, 0.02], [0.2, 0.04]])
    first, second = choose_thresholds(labels, scores)
    assert first == pytest.approx(0.5)   # Between 0.7 and 0.3: both right.
    assert second == pytest.approx(0.03)  # Between 0.04 and 0.02: both positives called.


def test_equal_scores_are_called_together():
    # The positive ties with a negative at 0.5: a cut between them is not allowed.
    labels = np.array([[1], [0], [0]])
    scores = np.array([[0.5], [0.5], [0.1]])
    assert choose_thresholds(labels, scores)[0] == pytest.approx(0.3)


def test_a_label_without_positives_keeps_the_default():
    labels = np.array([[1, 0], [0, 0]])
    scores = np.array([[0.9, 0.8], [0.1, 0.7]])
    assert choose_thresholds(labels, scores)[1] == DEFAULT_THRESHOLD


def test_choose_thresholds_refuses_mismatched_shapes():
    with pytest.raises(TransferError, match="must both be"):
        choose_thresholds(np.zeros((3, 2)), np.zeros((3, 3)))


def test_positive_weights_are_negatives_over_positives_clipped():
    assert positive_weights([50, 20, 1, 0], 100) == [1.0, 4.0, MAX_POSITIVE_WEIGHT, 1.0]
    assert positive_weights([60, 50], 100) is None  # No label is rare.


def test_thresholds_are_saved_with_the_model(tiny_base, tmp_path):
    model = tftransfer.build_classifier(tiny_base, 3, multi_label=True)
    assert is_multi_label(model)
    assert thresholds_of(model).tolist() == [0.5, 0.5, 0.5]
    set_thresholds(model, [0.2, 0.4, 0.9])
    model.save(tmp_path / "m.keras")
    loaded = tftransfer.models.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(thresholds_of(loaded), [0.2, 0.4, 0.9])
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded(images, training=False), model(images, training=False),
                               atol=1e-6)


def test_the_multi_label_head_ends_in_sigmoids():
    head = build_head(4, 3, multi_label=True)
    probabilities = head(np.random.default_rng(0).normal(0, 3, (5, 4)).astype("float32"))
    # Independent probabilities: rows need not sum to 1.
    assert not np.allclose(np.sum(probabilities, axis=1), 1.0)
    assert is_multi_label(head) and not is_multi_label(build_head(4, 3))


def test_set_thresholds_checks_the_count(tiny_base):
    model = tftransfer.build_classifier(tiny_base, 3, multi_label=True)
    with pytest.raises(TransferError, match="2 thresholds for 3 labels"):
        set_thresholds(model, [0.1, 0.2])
    with pytest.raises(TransferError, match="not multi-label"):
        thresholds_of(tftransfer.build_classifier(tiny_base, 3))
