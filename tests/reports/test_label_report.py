"""Multi-label metrics against values computed by hand, and the report page."""

import json

import numpy as np
import pytest

from tftransfer.errors import TransferError
from tftransfer.reports.label_report import LABEL_REPORT_KEYS, multi_label_report

LABELS = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]])
SCORES = np.array([[0.9, 0.2, 0.1], [0.4, 0.8, 0.3], [0.55, 0.7, 0.2],
                   [0.1, 0.6, 0.4], [0.7, 0.1, 0.1]])


def test_report_metrics_by_hand():
    report = multi_label_report(LABELS, SCORES, ["a", "b", "c"], [0.5, 0.65, 0.5],
                                files=[f"{i}.png" for i in range(5)])
    a, b, c = (report.per_label[name] for name in "abc")
    # a: called 0.9, 0.55, 0.7 -> rows 0, 2, 4; positives 0, 1, 4: tp 2.
    assert (a["precision"], a["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    # b at 0.65: called rows 1, 2 (0.8, 0.7); positives 1, 2: all right.
    assert (b["precision"], b["recall"], b["f1"]) == (1.0, 1.0, 1.0)
    # a's AP: ranked 0.9 (pos), 0.7 (pos), 0.55 (neg), 0.4 (pos), 0.1: (1 + 1 + 3/4) / 3.
    assert a["average_precision"] == pytest.approx(2.75 / 3)
    assert b["average_precision"] == 1.0
    assert c["support"] == 0 and "left out" in c["note"] and "never predicted" in c["note"]
    assert report.mean_average_precision == pytest.approx((2.75 / 3 + 1.0) / 2)
    assert report.macro_f1 == pytest.approx((2 / 3 + 1.0) / 2)
    # Pooled: tp 2 + 2, called 3 + 2, positives 3 + 2: F1 = 8 / 10.
    assert report.micro_f1 == pytest.approx(0.8)
    # Rows all right: 0, 4 (a only) and 3 (nothing); row 1 misses a, row 2 calls a.
    assert report.subset_accuracy == pytest.approx(3 / 5)
    assert report.unlabelled == 1
    worst = report.top_losses
    assert {loss["index"] for loss in worst} == {1, 2}
    # Row 1 misses a at 0.4 (loss -log 0.4); row 2 calls a at 0.55 (-log 0.45).
    assert worst[0]["index"] == 1 and worst[0]["true"] == ["a", "b"]
    assert worst[0]["predicted"] == ["b"] and worst[0]["file"] == "1.png"


def test_default_thresholds_are_one_half():
    report = multi_label_report(LABELS, SCORES, ["a", "b", "c"])
    assert report.thresholds == [0.5, 0.5, 0.5]
    assert report.per_label["b"]["precision"] == pytest.approx(2 / 3)  # Row 3's 0.6 too.


def test_report_refuses_bad_shapes_and_no_examples():
    with pytest.raises(TransferError, match="must both be"):
        multi_label_report(LABELS, SCORES[:, :2], ["a", "b", "c"])
    with pytest.raises(TransferError, match="no examples"):
        multi_label_report(np.zeros((0, 2)), np.zeros((0, 2)), ["a", "b"])


def test_save_writes_the_json_keys_and_a_page(tmp_path):
    report = multi_label_report(LABELS, SCORES, ["a", "b", "c"])
    page = report.save(tmp_path / "out", title="labels")
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert tuple(saved) == LABEL_REPORT_KEYS
    assert saved["mean_average_precision"] == report.mean_average_precision
    text = page.read_text()
    assert "mAP <b>0.958</b>" in text and "Precision and recall" in text
    assert (tmp_path / "out" / "precision_recall.png").stat().st_size > 1000
