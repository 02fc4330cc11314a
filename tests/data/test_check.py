import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tftransfer
from tftransfer.data import check_images

from conftest import (labels_of, relative, write_bad_corpus, write_image_folder)


def test_unusable_files_are_skipped_named_and_counted(tmp_path, caplog):
    root = write_image_folder(tmp_path / "messy", 4)
    (root / "red" / "empty.png").write_bytes(b"")
    (root / "red" / "notes.jpg").write_text("not an image")
    good = (root / "blue" / "000.png").read_bytes()
    (root / "blue" / "truncated.png").write_bytes(good[:40])
    (root / "green" / ".DS_Store").write_bytes(b"\0\1")
    data = tftransfer.image_folder(root, (16, 16), validation_split=0)
    assert sorted(data.skipped) == sorted(str(root / p) for p in [
        "red/empty.png", "red/notes.jpg", "blue/truncated.png", "green/.DS_Store"])
    assert data.skipped[str(root / "red" / "empty.png")] == "empty file"
    assert data.skipped[str(root / "green" / ".DS_Store")] == "hidden file"
    assert len(labels_of(data.train)) == 12
    assert "skipped 4 unusable file(s) (16 file(s) found = 12 used + 4 skipped)" in caplog.text
    assert "notes.jpg" in caplog.text


def test_scan_reconciles_found_with_used_and_skipped(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.zeros((4, 4, 3), "uint8")).save(path)
        paths.append(str(path))
    (tmp_path / "bad.png").write_text("x")
    paths.append(str(tmp_path / "bad.png"))
    usable, skipped = check_images(paths)
    assert len(usable) + len(skipped) == len(paths) and len(skipped) == 1


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "data folder not found"),
    (lambda root: write_image_folder(root, 2) and [
        __import__("shutil").rmtree(root / n) for n in ("green", "blue")],
     r"has 1 class folder\(s\) \(red\); a classifier needs at least 2"),
])
def test_bad_folders_name_the_problem(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(tftransfer.TransferError, match=message):
        tftransfer.image_folder(root, (16, 16))


def test_class_with_no_usable_image_is_an_error(tmp_path):
    root = write_image_folder(tmp_path / "data", 2)
    for path in (root / "green").iterdir():
        path.write_bytes(b"")
    with pytest.raises(tftransfer.TransferError, match="no usable images for class.*green"):
        tftransfer.image_folder(root, (16, 16))


def test_check_data_names_every_unusable_file_and_reconciles(bad_corpus):
    root, usable, skipped = bad_corpus
    report = tftransfer.data.check_data(root)
    assert report.found == len(usable) + len(skipped)
    assert report.found == report.used_count + len(report.skipped)
    used = {p for split in report.used.values() for paths in split.values() for p in paths}
    assert relative(root, used) == usable
    reasons = {k[len(str(root)) + 1:]: v for k, v in report.skipped.items()}
    assert set(reasons) == set(skipped)
    for path, words in skipped.items():
        assert words in reasons[path], (path, reasons[path])
    assert report.problems == [f"no usable images for class(es) birds in {root}"]


def test_the_check_prints_no_line_of_libjpeg_for_a_damaged_jpeg(bad_corpus, capfd):
    root, _, _ = bad_corpus
    report = tftransfer.data.check_data(root)
    assert any("truncated.jpg" in path for path in report.skipped)
    err = capfd.readouterr().err
    assert "JPEG" not in err and "Input file read error" not in err, err


def test_every_file_the_check_passes_trains_without_failing(tmp_path):
    root = tmp_path / "messy"
    usable, _ = write_bad_corpus(root)
    (root / "birds").rmdir()
    data = tftransfer.image_folder(root, (24, 24), batch_size=4, validation_split=0)
    images = np.concatenate([x.numpy() for x, _ in data.train])  # A whole epoch.
    assert images.shape == (len(usable), 24, 24, 3)
    assert len(data.skipped) == 11


def test_one_class_and_empty_classes_are_errors(tmp_path):
    root = write_image_folder(tmp_path / "data", 2)
    (root / "yellow").mkdir()
    with pytest.raises(tftransfer.TransferError, match="no usable images for class.*yellow"):
        tftransfer.image_folder(root, (16, 16))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_skipped(tmp_path):
    root = write_image_folder(tmp_path / "data", 2)
    locked = root / "red" / "000.png"
    locked.chmod(0)
    report = tftransfer.data.check_data(root)
    assert "unreadable" in report.skipped[str(locked)]


def test_the_check_decodes_once_and_the_first_epoch_reads_its_pixels(tmp_path):
    root = write_image_folder(tmp_path / "data", 4)
    cached = tftransfer.image_folder(root, (16, 16), validation_split=0.25)
    uncached = tftransfer.image_folder(root, (16, 16), validation_split=0.25, image_cache=False)
    for path in root.rglob("*.png"):
        path.write_bytes(b"gone")
    # Every image was decoded by the check: the epochs read what it kept.
    for _ in range(2):
        assert len(labels_of(cached.train)) == 9
    assert len(labels_of(cached.validation)) == 3
    with pytest.raises(tf.errors.InvalidArgumentError):
        labels_of(uncached.train)  # Without a cache, every epoch decodes again.


def test_images_over_the_pixel_limit_are_skipped_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(tftransfer.data.decode, "MAX_PIXELS", 40 * 30 - 1)
    write_image_folder(tmp_path / "photos", 2, size=(40, 30))
    Image.new("RGB", (20, 10)).save(tmp_path / "photos" / "red" / "small.png")
    usable, skipped = check_images(sorted((tmp_path / "photos" / "red").iterdir()))
    assert usable == [str(tmp_path / "photos" / "red" / "small.png")]
    assert set(skipped.values()) == {"too large: 40x30 pixels"}


def _png(path, color=(200, 40, 40)):
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), color, np.uint8)).save(path)


def test_a_validation_folder_is_read_and_counted_and_unused_files_are_named(tmp_path):
    for split in ("train", "validation", "test"):
        for name in ("a", "b"):
            for i in range(2):
                _png(tmp_path / split / name / f"{i}.png")
    _png(tmp_path / "extra" / "stray.png")
    (tmp_path / "README.txt").write_text("about the data")
    report = tftransfer.data.check_data(tmp_path)
    assert {split: sum(map(len, classes.values())) for split, classes in
            report.used.items()} == {"train": 4, "val": 4, "test": 4}
    assert report.skipped == {
        str(tmp_path / "README.txt"): "not in a split folder (train/, validation/, test/)",
        str(tmp_path / "extra" / "stray.png"):
            "not in a split folder (train/, validation/, test/)"}
    assert report.found == 14 == report.used_count + len(report.skipped)
    data = tftransfer.image_folder(tmp_path, (8, 8))
    assert sum(len(y) for _, y in data.validation) == 4  # Not split out of train/.
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(tftransfer.TransferError, match="more than one val split"):
        tftransfer.data.check_data(tmp_path)


def test_files_beside_the_class_folders_are_counted_and_named(tmp_path):
    for name in ("a", "b"):
        _png(tmp_path / name / "0.png")
    (tmp_path / "notes.txt").write_text("x")
    report = tftransfer.data.check_data(tmp_path)
    assert report.skipped == {str(tmp_path / "notes.txt"): "not in a class folder"}
    assert report.found == 3


def test_a_file_name_that_is_not_utf8_is_skipped_and_named_escaped(tmp_path, capsys):
    import os

    from tftransfer import cli

    for name in ("a", "b"):
        _png(tmp_path / name / "0.png")
    odd = os.fsencode(str(tmp_path / "a")) + b"/caf\xe9.png"
    with open(odd, "wb") as handle:
        handle.write((tmp_path / "a" / "0.png").read_bytes())
    report = tftransfer.data.check_data(tmp_path)
    assert report.skipped == {f"{tmp_path}/a/caf\\xe9.png": "the file name is not UTF-8"}
    data = tftransfer.image_folder(tmp_path, (8, 8), validation_split=0)
    assert sum(len(y) for _, y in data.train) == 2
    assert cli.main(["check-data", str(tmp_path)]) == 0
    assert "caf\\xe9.png: the file name is not UTF-8" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["new\nline", "tab\there", "bell\x07"])
def test_class_names_with_control_characters_are_refused(tmp_path, name):
    import numpy as np

    _png(tmp_path / name / "0.png")
    _png(tmp_path / "plain" / "0.png")
    with pytest.raises(tftransfer.TransferError, match="control character"):
        tftransfer.data.check_data(tmp_path)
    with pytest.raises(tftransfer.TransferError, match="control character"):
        tftransfer.data.numpy_arrays(np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 1]),
                                     (8, 8), class_names=[name, "plain"])
