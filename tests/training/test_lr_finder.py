import logging

import keras
import numpy as np
import pytest

import tftransfer
from tftransfer.errors import TransferError
from tftransfer.models.builder import build_head
from tftransfer.training.lr_finder import find_learning_rate
from conftest import tiny_dense_dataset


def test_range_test_picks_a_tenth_of_the_lowest_loss_and_leaves_the_model():
    keras.utils.set_random_seed(0)
    head = build_head(6, 3, dropout=0.0)
    before = [w.copy() for w in head.get_weights()]
    search = find_learning_rate(head, tiny_dense_dataset(), steps=120)
    assert all(np.array_equal(a, b) for a, b in zip(before, head.get_weights()))
    assert search.rate == pytest.approx(search.lowest / 10)
    assert search.lowest == search.rates[int(np.argmin(search.losses))]
    ratios = np.diff(np.log(search.rates))
    assert np.allclose(ratios, ratios[0])  # Geometric steps from min_rate.
    assert search.rates[0] == pytest.approx(1e-6)
    # The loss falls well below its start before the rate gets too large.
    assert min(search.losses) < 0.8 * search.losses[0]
    assert 1e-4 < search.rate < 1.0


def test_a_diverging_loss_ends_the_test_early(tmp_path):
    keras.utils.set_random_seed(0)
    head = build_head(6, 3, dropout=0.0)
    search = find_learning_rate(head, tiny_dense_dataset(), max_rate=1e4, steps=200)
    assert len(search.rates) < 200
    assert search.plot(tmp_path / "lr.png").stat().st_size > 1000


def test_bad_range_is_an_error():
    with pytest.raises(TransferError, match="min_rate < max_rate"):
        find_learning_rate(build_head(6, 3), tiny_dense_dataset(), min_rate=1.0,
                           max_rate=0.1)


def test_auto_head_rate_runs_on_the_cached_features(tiny_base, image_folder_path,
                                                    tmp_path, caplog):
    data = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=8)
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    phases = dict(head=tftransfer.Phase.head(epochs=2, learning_rate="auto"),
                  top=tftransfer.Phase.top(epochs=0), verbose=0)
    with caplog.at_level(logging.INFO, logger="tftransfer"):
        history = tftransfer.fine_tune(model, data.train, data.validation,
                                       options=tftransfer.RunOptions(feature_cache=tmp_path),
                                       **phases)
    assert history.rate_search is not None
    assert history.head_learning_rate == history.rate_search.rate
    assert "from a range test" in caplog.text
    # Uncached, there is nothing cheap to test on: the fallback rate, said so.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tftransfer"):
        history = tftransfer.fine_tune(model, data.train, data.validation,
                                       options=tftransfer.RunOptions(feature_cache=False),
                                       **phases)
    assert history.rate_search is None and history.head_learning_rate == 1e-3
    assert "needs cached features" in caplog.text
