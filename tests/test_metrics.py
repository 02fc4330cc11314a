"""The shared metrics: by hand, and against scikit-learn on random data."""

import numpy as np
import pytest

from tftransfer.metrics import (average_precision, mean_average_precision, precision_recall_curve,
                                scores_of_counts)
from tftransfer.reports.evaluation import classification_report
from tftransfer.reports.label_report import multi_label_report

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_average_precision_by_hand():
    # Ranked 0.9 (pos), 0.8 (neg), 0.6 (pos), 0.1 (pos): precision at each
    # positive 1, 2/3, 3/4, each adding a third of the recall.
    positive = [True, False, True, True]
    scores = [0.9, 0.8, 0.6, 0.1]
    assert average_precision(positive, scores) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert average_precision([False, False], [0.3, 0.2]) == 0.0


def test_ties_count_as_one_threshold():
    precision, recall = precision_recall_curve([True, False, True], [0.5, 0.5, 0.1])
    assert precision.tolist() == [0.5, pytest.approx(2 / 3)]
    assert recall.tolist() == [0.5, 1.0]


def test_scores_of_counts_of_a_class_never_predicted_or_absent():
    assert scores_of_counts(0, 0, 4) == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                         "support": 4}
    assert scores_of_counts(0, 3, 0)["recall"] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_equals_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    positive = rng.random(60) < 0.3
    positive[0] = True
    scores = np.round(rng.random(60), 1)  # Rounded: many ties.
    assert average_precision(positive, scores) == pytest.approx(
        sklearn_metrics.average_precision_score(positive, scores))


@pytest.mark.parametrize("seed", range(3))
def test_the_classification_report_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 80)
    probabilities = rng.dirichlet(np.ones(4), 80)
    report = classification_report(labels, probabilities, ["a", "b", "c", "d"], top_k=3)
    predicted = probabilities.argmax(1)
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(
        labels, predicted, zero_division=0)
    for i, name in enumerate("abcd"):
        row = report.per_class[name]
        assert [row["precision"], row["recall"], row["f1"], row["support"]] == pytest.approx(
            [precision[i], recall[i], f1[i], support[i]])
    for average in ("macro", "weighted"):
        expected = sklearn_metrics.precision_recall_fscore_support(
            labels, predicted, average=average, zero_division=0)[:3]
        row = report.per_class[f"{average} avg"]
        assert [row["precision"], row["recall"], row["f1"]] == pytest.approx(expected)
    assert report.accuracy == pytest.approx(sklearn_metrics.accuracy_score(labels, predicted))
    assert report.confusion_matrix == sklearn_metrics.confusion_matrix(labels,
                                                                       predicted).tolist()
    assert report.top_k_accuracy["accuracy"] == pytest.approx(
        sklearn_metrics.top_k_accuracy_score(labels, probabilities, k=3))


@pytest.mark.parametrize("seed", range(3))
def test_the_multi_label_report_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random((70, 5)) < 0.35).astype(int)
    labels[:, 4] = 0  # A label with no positive: left out of mAP and macro F1.
    scores = np.round(rng.random((70, 5)), 2)
    report = multi_label_report(labels, scores, list("abcde"))
    called = scores >= 0.5
    present = labels[:, :4]
    assert report.mean_average_precision == pytest.approx(
        sklearn_metrics.average_precision_score(present, scores[:, :4], average="macro"))
    assert mean_average_precision(labels, scores) == pytest.approx(
        report.mean_average_precision)
    assert report.micro_f1 == pytest.approx(
        sklearn_metrics.f1_score(labels, called, average="micro", zero_division=0))
    assert report.macro_f1 == pytest.approx(
        sklearn_metrics.f1_score(present, called[:, :4], average="macro", zero_division=0))
    assert report.subset_accuracy == pytest.approx(
        sklearn_metrics.accuracy_score(labels, called))
    for j, name in enumerate("abcd"):
        assert report.per_label[name]["precision"] == pytest.approx(
            sklearn_metrics.precision_score(labels[:, j], called[:, j], zero_division=0))
        assert report.per_label[name]["recall"] == pytest.approx(
            sklearn_metrics.recall_score(labels[:, j], called[:, j]))
    assert mean_average_precision(np.zeros((3, 2)), np.ones((3, 2))) is None
