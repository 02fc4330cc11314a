import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tftransfer
from tftransfer.data import decode_image, scan_images

from conftest import write_image_folder


def labels_of(dataset):
    return np.concatenate([y.numpy() for _, y in dataset])


def test_image_folder_splits_stratified_and_seeded(image_folder_path):
    data = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=4,
                                   validation_split=0.25, seed=3)
    train, validation, class_names = data
    assert class_names == ["blue", "green", "red"]
    assert sorted(np.bincount(labels_of(validation))) == [2, 2, 2]
    assert sorted(np.bincount(labels_of(train))) == [6, 6, 6]
    images, labels = next(iter(train))
    assert images.dtype == tf.float32 and images.shape == (4, 32, 32, 3)
    assert labels.dtype == tf.int32
    assert 0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255
    again = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=4,
                                    validation_split=0.25, seed=3)
    np.testing.assert_array_equal(
        np.concatenate([x.numpy() for x, _ in validation]),
        np.concatenate([x.numpy() for x, _ in again.validation]))


def test_image_folder_reads_train_val_test_folders(split_folder_path):
    data = tftransfer.image_folder(split_folder_path, (24, 24), batch_size=5)
    assert data.class_names == ["blue", "green", "red"]
    assert len(labels_of(data.train)) == 18
    assert len(labels_of(data.validation)) == 9
    assert len(labels_of(data.test)) == 9


def test_train_split_is_reshuffled_each_epoch(image_folder_path):
    train = tftransfer.image_folder(image_folder_path, (16, 16), batch_size=24,
                                    validation_split=0).train
    first, second = labels_of(train), labels_of(train)
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


def test_unusable_files_are_skipped_named_and_counted(tmp_path, caplog):
    root = write_image_folder(tmp_path / "messy", 4)
    (root / "red" / "empty.png").write_bytes(b"")
    (root / "red" / "notes.jpg").write_text("not an image")
    good = (root / "blue" / "000.png").read_bytes()
    (root / "blue" / "truncated.png").write_bytes(good[:40])
    (root / "green" / ".DS_Store").write_bytes(b"\0\1")
    data = tftransfer.image_folder(root, (16, 16), validation_split=0)
    assert sorted(data.skipped) == sorted(
        str(root / p) for p in ["red/empty.png", "red/notes.jpg", "blue/truncated.png"])
    assert data.skipped[str(root / "red" / "empty.png")] == "empty file"
    assert len(labels_of(data.train)) == 12
    assert "skipped 3 unusable file(s)" in caplog.text
    assert "notes.jpg" in caplog.text


def test_scan_reconciles_found_with_used_and_skipped(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.zeros((4, 4, 3), "uint8")).save(path)
        paths.append(str(path))
    (tmp_path / "bad.png").write_text("x")
    paths.append(str(tmp_path / "bad.png"))
    usable, skipped = scan_images(paths)
    assert len(usable) + len(skipped) == len(paths) and len(skipped) == 1


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_decode_image_gives_three_channels(tmp_path, mode):
    path = tmp_path / f"{mode}.png"
    Image.new(mode, (10, 6)).save(path)
    image = decode_image(tf.io.read_file(str(path)), (8, 8))
    assert image.shape == (8, 8, 3) and image.dtype == tf.float32


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
