import csv
import json

import numpy as np
import pytest

import tftransfer
from tftransfer.export import predict

from conftest import write_image_folder


@pytest.fixture(scope="module")
def exported(tiny_base_file, tmp_path_factory):
    base = tftransfer.load_base(str(tiny_base_file), preprocessing="unit")
    model = tftransfer.build_classifier(base, 3, augmentation=None)
    path = tmp_path_factory.mktemp("export") / "m"
    tftransfer.export_saved_model(model, path, ["blue", "green", "red"])
    return path


@pytest.fixture
def folder_with_three_bad_files(tmp_path):
    root = write_image_folder(tmp_path / "photos", 3)
    (root / "red" / "empty.png").write_bytes(b"")
    (root / "green" / "notes.jpg").write_text("not an image")
    good = (root / "blue" / "000.png").read_bytes()
    (root / "blue" / "truncated.png").write_bytes(good[:60])
    return root


def test_every_good_image_is_answered_and_every_bad_one_named(exported,
                                                              folder_with_three_bad_files):
    result = tftransfer.predict_files(exported, [folder_with_three_bad_files], top_k=2)
    assert len(result) == 9 and all(len(ranked) == 2 for _, ranked in result)
    assert sorted(p.split("/")[-1] for p in result.skipped) == [
        "empty.png", "notes.jpg", "truncated.png"]
    assert all(reason for reason in result.skipped.values())


def test_files_folders_and_lists_of_paths(exported, tmp_path):
    root = write_image_folder(tmp_path / "photos", 2)
    listing = tmp_path / "some.txt"
    listing.write_text("photos/red/000.png\nphotos/blue/001.png\n\nphotos/missing.png\n")
    paths, skipped = predict.image_paths([root / "green" / "000.png", root / "blue", listing])
    assert [p.name for p in paths] == ["000.png", "000.png", "001.png", "000.png", "001.png"]
    assert skipped == {str(tmp_path / "photos" / "missing.png"): "not found"}


def test_images_are_read_in_batches(exported, tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "photos", 10)  # 30 images.
    sizes = []
    from tftransfer.export.exported import ExportedModel

    real = ExportedModel.predict_files

    def counted(self, contents):
        sizes.append(len(contents))
        return real(self, contents)

    monkeypatch.setattr(ExportedModel, "predict_files", counted)
    result = tftransfer.predict_files(exported, [root], batch_size=8)
    assert len(result) == 30 and sizes == [8, 8, 8, 6]


def test_the_cli_writes_csv_and_jsonl_and_exits_3_when_it_skipped(
        exported, folder_with_three_bad_files, tmp_path, capsys):
    from tftransfer import cli

    out = tmp_path / "predictions.csv"
    assert cli.main(["predict", "--model", str(exported), str(folder_with_three_bad_files),
                     "--predictions", str(out), "--top-k", "2"]) == 3
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "label", "score", "label_2", "score_2", "error"]
    answered = [r for r in rows if not r["error"]]
    assert len(answered) == 9 and len(rows) == 12
    assert all(r["label"] in ("blue", "green", "red") and float(r["score"]) > 0
               for r in answered)
    assert "3 image(s) could not be read" in capsys.readouterr().out
    lines = tmp_path / "predictions.jsonl"
    good = folder_with_three_bad_files / "red"
    assert cli.main(["predict", "--model", str(exported), str(good / "000.png"),
                     "--predictions", str(lines)]) == 0
    (record,) = [json.loads(line) for line in lines.read_text().splitlines()]
    assert record["error"] is None and len(record["top"]) == 3
    assert np.isclose(sum(score for _, score in record["top"]), 1.0, atol=1e-5)


def test_multi_label_predict_answers_the_labels_over_their_thresholds(
        multi_label_export, multi_label_csv, tmp_path):
    from PIL import Image

    from tftransfer.models.multi_label import thresholds_of
    from tftransfer.export.predict import iter_predictions, write_predictions

    model, folder = multi_label_export
    path, _ = multi_label_csv
    files = sorted((path.parent / "images").glob("*.png"))[:10]
    answers = dict(tftransfer.predict_files(folder, files))
    images = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32) for f in files])
    probabilities = model(images, training=False).numpy()
    names = ["blue", "green", "red"]
    for file, row in zip(files, probabilities):
        over = [names[j] for j in np.argsort(-row) if row[j] >= thresholds_of(model)[j]]
        assert [name for name, _ in answers[str(file)]] == over
    out = tmp_path / "p.csv"
    assert write_predictions(iter_predictions(folder, files), out, None) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "path,labels,scores,error" and len(lines) == 11
    first = lines[1].split(",")
    assert first[1].split() == [name for name, _ in answers[str(files[0])]]


@pytest.mark.slow
def test_memory_stays_flat_over_ten_times_the_images(exported, tmp_path):
    import os
    import subprocess
    import sys

    from PIL import Image

    # 256x256 noise PNGs of ~200 KB each: had predict read all 1,000 files at
    # once, their bytes alone would add ~190 MB over the run of 100.
    rng = np.random.default_rng(0)
    for count in (100, 1000):
        (tmp_path / str(count)).mkdir()
    for i in range(1000):
        image = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
        image.save(tmp_path / "1000" / f"{i:04d}.png")
        if i < 100:
            image.save(tmp_path / "100" / f"{i:04d}.png")
    peaks = {}
    for count in (100, 1000):
        child = subprocess.Popen([sys.executable, "-m", "tftransfer.cli", "predict", "--model",
                                  str(exported), str(tmp_path / str(count)), "--predictions",
                                  str(tmp_path / f"{count}.csv")], stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        peaks[count] = usage.ru_maxrss / 1024  # MB
        assert len((tmp_path / f"{count}.csv").read_text().splitlines()) == count + 1
    print("peak RSS (MB) by image count:", peaks)
    assert peaks[1000] < peaks[100] + 60, peaks
