import numpy as np

from tftransfer.keep import average_weights, choose_kept, mean_loss, paired_wins


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


def test_the_average_is_kept_when_neither_phase_beats_it_on_the_same_images():
    # Same accuracy, different images: no paired evidence for either phase.
    head = _probabilities(LABELS, [1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    top = _probabilities(LABELS, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    average = _probabilities(LABELS, [1, 1, 1, 1, 1, 1, 1, 1, 1, 0], confidence=0.8)
    name, reason = choose_kept(LABELS, {"head": head, "top": top, "average": average})
    assert name == "average" and "10 validation images" in reason


def test_the_top_phase_is_kept_only_with_paired_wins_and_a_lower_loss():
    average = _probabilities(LABELS, [1, 1, 1, 1, 1, 1, 1, 1, 0, 0], confidence=0.7)
    head = average
    sure = _probabilities(LABELS, [1, 1, 1, 1, 1, 1, 1, 1, 1, 0], confidence=0.95)
    assert choose_kept(LABELS, {"head": head, "top": sure, "average": average})[0] == "top"
    # One more image right, but so unsure of the rest that its loss is higher.
    unsure = _probabilities(LABELS, [1, 1, 1, 1, 1, 1, 1, 1, 1, 0], confidence=0.4)
    assert mean_loss(LABELS, unsure) > mean_loss(LABELS, average)
    assert choose_kept(LABELS, {"head": head, "top": unsure, "average": average})[0] == \
        "average"


def test_the_head_is_kept_when_the_top_phase_ruined_the_average():
    head = _probabilities(LABELS, [1] * 10)
    ruined = _probabilities(LABELS, [0] * 10)
    half = _probabilities(LABELS, [1, 0] * 5)
    name, reason = choose_kept(LABELS, {"head": head, "top": ruined, "average": half})
    assert name == "head" and "5 images right that the average gets wrong" in reason


def test_a_margin_of_two_needs_two_net_wins():
    average = _probabilities(LABELS, [1, 1, 1, 1, 1, 1, 1, 1, 0, 0], confidence=0.7)
    top = _probabilities(LABELS, [1, 1, 1, 1, 1, 1, 1, 1, 1, 0], confidence=0.95)
    candidates = {"head": average, "top": top, "average": average}
    assert choose_kept(LABELS, candidates, margin=1)[0] == "top"
    assert choose_kept(LABELS, candidates, margin=2)[0] == "average"


def test_average_weights_interpolates_floats_and_keeps_the_second_counters():
    first = [np.zeros(3, np.float32), np.array([1], np.int64)]
    second = [np.ones(3, np.float32) * 4, np.array([7], np.int64)]
    averaged = average_weights(first, second)
    np.testing.assert_allclose(averaged[0], [2, 2, 2])
    assert averaged[1].tolist() == [7]
    np.testing.assert_allclose(average_weights(first, second, alpha=0.25)[0], [1, 1, 1])
