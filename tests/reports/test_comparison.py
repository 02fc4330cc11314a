import json

import pytest

import tftransfer
from tftransfer.errors import TransferError
from tftransfer.reports.comparison import METHODS, compare


@pytest.fixture
def data(tiny_base, split_folder_path):
    return tftransfer.load_data(str(split_folder_path), tiny_base.input_size, batch_size=8)


def test_three_methods_scored_on_the_same_test_images(tiny_base, data, tmp_path):
    before = [w.copy() for w in tiny_base.features.get_weights()]
    comparison = compare(tiny_base, data, methods=("scratch", "features"),
                         scratch_epochs=2, feature_cache=tmp_path / "cache")
    assert [r.method for r in comparison.results] == ["scratch", "features"]
    assert comparison.split == "test"
    assert {r.report.num_examples for r in comparison.results} == {9}
    # Neither method touches the pretrained base: scratch trains a copy.
    assert all((a == b).all() for a, b in zip(before, tiny_base.features.get_weights()))
    lines = comparison.table().splitlines()
    assert len(lines) == 3 and lines[1].startswith("scratch")
    page = comparison.save(tmp_path / "page")
    saved = json.loads((tmp_path / "page" / "compare.json").read_text())
    assert [m["method"] for m in saved["methods"]] == ["scratch", "features"]
    assert saved["methods"][1]["accuracy"] == comparison.results[1].report.accuracy
    for method in ("scratch", "features"):
        assert (tmp_path / "page" / f"confusion_{method}.png").is_file()
    assert "data:image/png;base64," in page.read_text()


def test_unknown_method_is_an_error(tiny_base, data):
    with pytest.raises(TransferError, match="unknown methods"):
        compare(tiny_base, data, methods=("magic",))
    assert METHODS == ("scratch", "features", "fine_tune")


def test_multi_label_data_is_compared_by_mean_average_precision(tiny_base, multi_label_csv,
                                                                tmp_path):
    from tftransfer.reports.label_report import LabelReport

    path, _ = multi_label_csv
    data = tftransfer.load_data(path, tiny_base.input_size, batch_size=8)
    comparison = compare(tiny_base, data, methods=("scratch", "features"), scratch_epochs=2,
                         feature_cache=tmp_path / "cache")
    assert comparison.split == "validation" and comparison.metric == "mAP"
    reports = [r.report for r in comparison.results]
    assert all(isinstance(r, LabelReport) for r in reports)
    assert comparison.table().splitlines()[0].split()[1] == "mAP"
    # The scratch model's thresholds were tuned on the validation images too.
    assert reports[0].thresholds != [0.5, 0.5, 0.5]
    comparison.save(tmp_path / "page")
    saved = json.loads((tmp_path / "page" / "compare.json").read_text())
    assert saved["methods"][1]["mAP"] == reports[1].mean_average_precision
    assert not list((tmp_path / "page").glob("confusion_*.png"))
