import numpy as np

from tftransfer.training.evidence import (knn_accuracy, measure_evidence, softmax_probabilities,
                                          softmax_regression, stratified_folds)


def _blobs(separation, per_class=30, classes=4, dims=16, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    centres = rng.normal(size=(classes, dims)) * separation
    return (centres[labels] + rng.normal(size=(len(labels), dims))).astype("float32"), labels


def test_softmax_regression_separates_separable_classes():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(loc, 1.0, (40, 5)) for loc in (-3, 0, 3)]).astype("float32")
    y = np.repeat(np.arange(3), 40)
    assert (softmax_probabilities(softmax_regression(x, y, 3), x).argmax(axis=1) == y).mean() > 0.95


def test_separable_features_leave_no_headroom():
    features, labels = _blobs(separation=4.0)
    evidence = measure_evidence(features, labels, 4)
    assert evidence.oof_accuracy > 0.97 and evidence.knn_accuracy > 0.97
    assert evidence.headroom < 0.03
    assert evidence.rows == 120 and evidence.folds == 5
    assert evidence.oof_log_loss < 0.2


def test_features_that_cannot_separate_the_classes_score_near_chance():
    features, labels = _blobs(separation=0.0)
    evidence = measure_evidence(features, labels, 4)
    # Four classes: chance is 0.25; out of fold, a head cannot memorise its way above it.
    assert evidence.oof_accuracy < 0.45 and evidence.knn_accuracy < 0.45
    assert evidence.oof_log_loss > np.log(4) * 0.9
    assert 0.03 < evidence.oof_accuracy_se < 0.06


def test_out_of_fold_is_not_the_training_accuracy():
    # 20 rows and 64 dimensions: a head fits any labels, but scores chance on unseen rows.
    rng = np.random.default_rng(3)
    features, labels = rng.normal(size=(40, 64)), np.repeat([0, 1], 20)
    head = softmax_regression(features, labels, 2)
    assert (softmax_probabilities(head, features).argmax(axis=1) == labels).mean() == 1.0
    assert measure_evidence(features, labels, 2).oof_accuracy < 0.75


def test_stratified_folds_spread_every_class():
    labels = np.repeat(np.arange(3), [10, 5, 2])
    fold = stratified_folds(labels, 5, np.random.default_rng(0))
    for label in range(3):
        per_fold = np.bincount(fold[labels == label], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1


def test_a_class_with_one_image_gives_no_evidence_and_folds_shrink():
    features, labels = _blobs(separation=4.0, per_class=3, classes=2)
    assert measure_evidence(features, labels, 2).folds == 3
    assert measure_evidence(features[:4], np.array([0, 0, 0, 1]), 2) is None


def test_knn_leaves_each_row_out():
    # Two exact pairs with different labels: each row's nearest other is its twin.
    features = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert knn_accuracy(features, np.array([0, 1, 0, 1]), 2, neighbours=1) == 0.0
    assert knn_accuracy(features, np.array([0, 0, 1, 1]), 2, neighbours=1) == 1.0
