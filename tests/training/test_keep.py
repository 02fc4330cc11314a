from types import SimpleNamespace

import keras
import numpy as np

from tftransfer.training.keep import average_weights, choose_kept, paired_wins


def _probabilities(labels, right, confidence=0.9, classes=3):
    """One-hot-ish probabilities that get `right[i]` of image i right."""
    out = np.full((len(labels), classes), (1 - confidence) / (classes - 1), np.float32)
    predicted = np.where(right, labels, (labels + 1) % classes)
    out[np.arange(len(labels)), predicted] = confidence
    return out


LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


def test_paired_wins_count_only_the_images_the_two_disagree_on():
    first = _probabilities(LABELS, [1, 1, 1, 0, 0, 1, 1, 1, 1, 1])
    second = _probabilities(LABELS, [1, 1, 0, 1, 1, 1, 1, 1, 1, 1])
    assert paired_wins(LABELS, first, second) == (2, 1)
    assert paired_wins(LABELS, second, first) == (1, 2)


def test_the_average_stands_unless_a_sign_test_says_otherwise():
    labels = np.arange(20) % 3
    average = _probabilities(labels, [1] * 14 + [0] * 6)
    head = _probabilities(labels, [0, 0] + [1] * 12 + [0] * 6)
    # Three more right, none fewer: p = 0.125, within what 20 images can tell.
    top = _probabilities(labels, [1] * 17 + [0] * 3)
    name, reason = choose_kept(labels, {"head": head, "top": top, "average": average})
    assert name == "average" and "(20 validation images)" in reason
    assert "the top phase's get 3 images right that the average gets wrong, 0 the other " \
           "way (p = 0.125)" in reason
    # Four: p = 0.0625 < 0.1, the top phase's weights replace the average.
    top = _probabilities(labels, [1] * 18 + [0] * 2)
    name, reason = choose_kept(labels, {"head": head, "top": top, "average": average})
    assert name == "top" and reason.startswith("kept the top phase's weights")
    assert choose_kept(labels, {"head": head, "top": top, "average": average},
                       alpha=0.05)[0] == "average"


def test_the_head_is_kept_when_the_top_phase_ruined_the_average():
    head = _probabilities(LABELS, [1] * 10)
    ruined = _probabilities(LABELS, [0] * 10)
    half = _probabilities(LABELS, [1, 0] * 5)
    name, reason = choose_kept(LABELS, {"head": head, "top": ruined, "average": half})
    assert name == "head" and "the head phase's get 5 images right" in reason


def test_the_sign_test_by_hand():
    from tftransfer.training.keep import sign_test

    assert sign_test(5, 1) == (6 + 1) / 64  # P(X >= 5), X ~ Binomial(6, 1/2)
    assert sign_test(0, 0) == 1.0 and sign_test(1, 1) == 0.75


def test_average_weights_interpolates_floats_and_keeps_the_second_counters():
    first = [np.zeros(3, np.float32), np.array([1], np.int64)]
    second = [np.ones(3, np.float32) * 4, np.array([7], np.int64)]
    averaged = average_weights(first, second)
    np.testing.assert_allclose(averaged[0], [2, 2, 2])
    assert averaged[1].tolist() == [7]
    np.testing.assert_allclose(average_weights(first, second, alpha=0.25)[0], [1, 1, 1])


def test_without_validation_data_a_top_phase_with_a_higher_loss_gives_way():
    from tftransfer.training import fine_tuning as training
    from tftransfer.training.keep import top_lost

    plan = SimpleNamespace(head=SimpleNamespace(phase=training.HEAD),
                           top=SimpleNamespace(phase=training.TOP), multi_label=False)
    no_validation = keras.callbacks.History()
    no_validation.history = {"loss": [0.3, 0.2]}
    worse, better = keras.callbacks.History(), keras.callbacks.History()
    worse.history, better.history = {"loss": [0.1, 0.25]}, {"loss": [0.3, 0.15]}
    assert top_lost(no_validation, worse, plan, "loss")
    assert not top_lost(no_validation, better, plan, "loss")


def test_a_multi_label_top_phase_with_a_lower_exact_validation_map_is_not_kept():
    from tftransfer.training.keep import multi_label_kept

    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    head = np.array([[0.9, 0.2], [0.3, 0.8], [0.6, 0.7], [0.2, 0.1]])  # mAP 1.0
    top = np.array([[0.9, 0.2], [0.95, 0.8], [0.6, 0.7], [0.2, 0.9]])  # Ranks wrongly.
    kept, reason = multi_label_kept(labels, head, top)
    assert kept == "head" and "(top) against 1.0000 (head)" in reason
    assert multi_label_kept(labels, top, head)[0] == "top"
    assert multi_label_kept(np.zeros((2, 2)), head[:2], top[:2])[0] == "top"
