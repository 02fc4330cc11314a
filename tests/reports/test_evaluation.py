import json
import math

import numpy as np
import pytest

import tftransfer
from tftransfer.errors import TransferError
from tftransfer.export.tflite import export_tflite
from tftransfer.reports.evaluation import REPORT_KEYS, classification_report, evaluate

# Five examples of classes a, b, c; class d is absent and, like c, never predicted.
LABELS = [0, 0, 1, 1, 2]
PROBABILITIES = [
    [0.70, 0.20, 0.10, 0.0],  # a -> a (0.7, right)
    [0.30, 0.60, 0.10, 0.0],  # a -> b (0.6, wrong)
    [0.05, 0.90, 0.05, 0.0],  # b -> b (0.9, right)
    [0.80, 0.05, 0.15, 0.0],  # b -> a (0.8, wrong); b is not in its top 2
    [0.20, 0.50, 0.30, 0.0],  # c -> b (0.5, wrong)
]
NAMES = ["a", "b", "c", "d"]
FILES = [f"img{i}.jpg" for i in range(5)]


@pytest.fixture
def report():
    return classification_report(LABELS, PROBABILITIES, NAMES, files=FILES, top_k=2)


def test_every_metric_equals_the_hand_computed_value(report):
    assert report.accuracy == pytest.approx(2 / 5)
    assert report.top_k_accuracy == {"k": 2, "accuracy": pytest.approx(4 / 5)}
    assert report.confusion_matrix == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0],
                                       [0, 0, 0, 0]]
    a, b, c, d = (report.per_class[n] for n in NAMES)
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == pytest.approx(
        (1 / 2, 1 / 2, 1 / 2, 2))
    # b: predicted 3 times, 1 right; 2 examples, 1 found.
    assert (b["precision"], b["recall"], b["f1"], b["support"]) == pytest.approx(
        (1 / 3, 1 / 2, 0.4, 2))
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 1)
    assert "never predicted" in c["note"]
    assert d["support"] == 0 and "absent" in d["note"] and "never predicted" in d["note"]
    assert "note" not in a and "note" not in b
    # Averages over the classes present (a, b, c); weighted by support 2, 2, 1.
    macro, weighted = report.per_class["macro avg"], report.per_class["weighted avg"]
    assert (macro["precision"], macro["recall"], macro["f1"]) == pytest.approx(
        ((1 / 2 + 1 / 3) / 3, 1 / 3, 0.3))
    assert (weighted["precision"], weighted["recall"], weighted["f1"]) == pytest.approx(
        ((1 + 2 / 3) / 5, 2 / 5, 1.8 / 5))
    assert macro["support"] == weighted["support"] == 5
    # One example per confidence bin: ECE is the mean |correct - confidence|.
    assert report.expected_calibration_error == pytest.approx(
        (0.3 + 0.6 + 0.1 + 0.8 + 0.5) / 5)
    assert [b["count"] for b in report.reliability] == [1, 1, 1, 1, 1]
    # Worst first: example 3 (p(true) 0.05), then 1 and 4 (0.3 each), in order.
    assert [t["index"] for t in report.top_losses] == [3, 1, 4]
    assert report.top_losses[0] == {"index": 3, "file": "img3.jpg", "true": "b",
                                    "predicted": "a", "confidence": 0.8,
                                    "loss": pytest.approx(-math.log(0.05))}
    assert report.class_names == NAMES and report.num_examples == 5


def test_report_json_holds_exactly_the_documented_keys(report, tmp_path):
    page = report.save(tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert tuple(saved) == REPORT_KEYS
    assert saved["confusion_matrix"][2] == [0, 1, 0, 0]
    assert page == tmp_path / "report.html"
    for png in ("confusion_matrix.png", "reliability.png"):
        assert (tmp_path / png).stat().st_size > 1000
    text = page.read_text()
    assert "never predicted" in text and "img3.jpg" in text
    assert "src=\"data:image/png;base64," in text  # Self-contained.


def test_bad_inputs_name_the_problem():
    with pytest.raises(TransferError, match="shape"):
        classification_report([0, 1], [[0.5, 0.5]], ["a", "b"])
    with pytest.raises(TransferError, match="labels must be in"):
        classification_report([0, 2], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"])
    with pytest.raises(TransferError, match="no examples"):
        classification_report([], np.zeros((0, 2)), ["a", "b"])
    with pytest.raises(TransferError, match="cannot evaluate"):
        evaluate("no/such/model.bin", None)


@pytest.fixture(scope="module")
def trained(tiny_base_file, split_folder_path):
    base = tftransfer.load_base(str(tiny_base_file), preprocessing="unit")
    data = tftransfer.load_data(str(split_folder_path), base.input_size, batch_size=4)
    model = tftransfer.build_classifier(base, len(data.class_names), augmentation=None)
    tftransfer.fine_tune(model, data.train, data.validation,
                         head=tftransfer.Phase.head(epochs=3),
                         top=tftransfer.Phase.top(epochs=0), verbose=0)
    return model, data


def test_keras_saved_model_and_tflite_give_the_same_report(trained, split_folder_path,
                                                           tmp_path):
    model, data = trained
    exported = tftransfer.export_saved_model(model, tmp_path / "export", data.class_names)
    tflite = export_tflite(model, tmp_path / "model.tflite", class_names=data.class_names)
    reports = [evaluate(m, split_folder_path) for m in (model, tmp_path / "export",
                                                        exported, tflite)]
    first = reports[0]
    assert first.num_examples == 9  # The test/ split: 3 classes x 3.
    assert first.class_names == data.class_names
    # Files are named, in the dataset's order, for the top losses.
    assert all(t["file"] and t["file"].endswith(".jpg") for t in first.top_losses)
    for other in reports[1:]:
        assert other.confusion_matrix == first.confusion_matrix
        assert other.accuracy == first.accuracy
        assert other.expected_calibration_error == pytest.approx(
            first.expected_calibration_error, abs=1e-5)
        assert [t["index"] for t in other.top_losses] == [
            t["index"] for t in first.top_losses]
    # The same numbers as Keras' own evaluation of the test split.
    keras_accuracy = model.evaluate(data.test, verbose=0, return_dict=True)["accuracy"]
    assert first.accuracy == pytest.approx(keras_accuracy)


def test_a_folder_without_test_split_is_evaluated_whole(trained, image_folder_path):
    model, _ = trained
    report = evaluate(model, image_folder_path)
    assert report.num_examples == 24
    assert sum(map(sum, report.confusion_matrix)) == 24


def test_the_data_is_matched_to_the_model_by_class_name(trained, split_folder_path, tmp_path):
    import shutil

    model, data = trained
    exported = tftransfer.export_saved_model(model, tmp_path / "export", data.class_names)
    # A folder with two of the model's classes, under other label numbers.
    subset = tmp_path / "subset"
    for name in data.class_names[1:]:
        shutil.copytree(split_folder_path / "test" / name, subset / name)
    report = evaluate(exported, subset)
    assert report.class_names == data.class_names
    whole = evaluate(exported, split_folder_path)
    assert report.confusion_matrix[1:] == whole.confusion_matrix[1:]
    assert report.confusion_matrix[0] == [0, 0, 0]
    assert "absent from the data" in report.per_class[data.class_names[0]]["note"]
    shutil.copytree(split_folder_path / "test" / data.class_names[0], subset / "zebra")
    with pytest.raises(tftransfer.TransferError, match="does not know: zebra"):
        evaluate(exported, subset)


def test_multi_label_models_and_exports_score_alike_on_a_csv(multi_label_export,
                                                             multi_label_csv, tmp_path):
    from tftransfer.reports.label_report import LabelReport

    model, folder = multi_label_export
    path, _ = multi_label_csv
    by_keras = evaluate(model, path)
    by_export = evaluate(folder, path)
    tflite = export_tflite(model, tmp_path / "m.tflite", class_names=["blue", "green", "red"])
    by_tflite = evaluate(tflite, path)
    assert isinstance(by_keras, LabelReport) and by_keras.num_examples == 60
    assert by_keras.thresholds == pytest.approx([0.45, 0.5, 0.55])
    for other in (by_export, by_tflite):
        assert other.thresholds == pytest.approx(by_keras.thresholds)
        assert other.mean_average_precision == pytest.approx(
            by_keras.mean_average_precision, abs=1e-4)
        assert other.class_names == ["blue", "green", "red"]
    assert all(loss["file"] for loss in by_keras.top_losses)
