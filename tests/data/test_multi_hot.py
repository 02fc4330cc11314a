"""Multi-label sources: CSV of label sets, multi-hot arrays and tf.data."""

import logging

import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from tftransfer.data import identify
from tftransfer.data.loader import source_files
from tftransfer.data.multi_hot import (multi_hot, is_multi_label_csv, multi_label_evaluation,
                                       read_labels_csv)
from tftransfer.errors import TransferError

from conftest import write_multi_label_csv


def all_labels(dataset):
    return np.concatenate([y.numpy() for _, y in dataset])


def test_csv_rows_give_label_sets_and_sorted_names(tmp_path):
    (tmp_path / "a.png").touch()
    csv = tmp_path / "l.csv"
    csv.write_text("path,labels\na.png,dog cat\nb.png,\nc.png,cat;x\n")
    paths, label_lists, names = read_labels_csv(csv)
    assert paths[0] == str(tmp_path / "a.png")
    assert label_lists == [["cat", "dog"], [], ["cat;x"]]
    assert names == ["cat", "cat;x", "dog"]
    _, label_lists, names = read_labels_csv(csv, label_sep=";")
    assert label_lists[2] == ["cat", "x"] and label_lists[0] == ["dog cat"]
    assert is_multi_label_csv(csv)
    csv.write_text('path,labels\na.png,dog,cat\nb.png\n"c.png","x, y"\n')
    _, label_lists, _ = read_labels_csv(csv, label_sep=",")
    assert label_lists == [["cat", "dog"], [], ["x", "y"]]
    csv.write_text("path,label\na.png,dog\n")
    assert not is_multi_label_csv(csv)


def test_load_data_reads_a_labels_csv_as_multi_hot(multi_label_csv, caplog):
    path, hot = multi_label_csv
    with caplog.at_level(logging.INFO, logger="tftransfer"):
        data = tftransfer.load_data(path, (32, 32), batch_size=8, validation_split=0.25)
    assert data.multi_label and data.class_names == ["blue", "green", "red"]
    train, val = all_labels(data.train), all_labels(data.validation)
    assert train.shape[1] == 3 and len(train) + len(val) == len(hot) and len(val) == 15
    # The CSV's label columns were blue/green/red in sorted order already.
    assert np.sort(np.concatenate([train, val]), axis=0).tolist() == np.sort(
        hot, axis=0).tolist()
    unlabelled = int((hot.sum(axis=1) == 0).sum())
    assert f"{unlabelled} with no label" in caplog.text


def test_validation_labels_follow_their_files(multi_label_csv):
    path, hot = multi_label_csv
    data = tftransfer.load_data(path, (32, 32), batch_size=8)
    files = source_files(data.validation)
    expected = np.array([hot[int(f[-7:-4])] for f in files])
    np.testing.assert_array_equal(all_labels(data.validation), expected)


def test_unreadable_files_are_skipped_and_named(tmp_path, caplog):
    path, _ = write_multi_label_csv(tmp_path, count=20)
    (tmp_path / "images" / "broken.png").write_bytes(b"not an image")
    with path.open("a") as out:
        out.write("images/broken.png,red\nimages/missing.png,blue\n")
    with caplog.at_level(logging.WARNING, logger="tftransfer"):
        data = tftransfer.load_data(path, (32, 32), validation_split=0.0)
    assert len(data.skipped) == 2
    assert "broken.png" in caplog.text and "missing.png" in caplog.text
    assert len(all_labels(data.train)) == 20


def test_a_label_no_training_image_has_is_an_error(tmp_path):
    path, _ = write_multi_label_csv(tmp_path, count=6)
    (tmp_path / "images" / "000.png").rename(tmp_path / "images" / "x.png")
    path.write_text("path,labels\nimages/x.png,red\nimages/001.png,blue\n"
                    "images/002.png,red blue\nimages/003.png,green\n")
    with pytest.raises(TransferError, match="no usable training image has the label"):
        tftransfer.load_data(path, (32, 32), validation_split=0.5, seed=3)


def test_multi_label_flag_reads_a_headerless_csv(tmp_path):
    write_multi_label_csv(tmp_path, count=12)
    lines = (tmp_path / "labels.csv").read_text().splitlines()[1:]
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(lines) + "\n")
    data = tftransfer.load_data(plain, (32, 32), multi_label=True, validation_split=0.0)
    assert data.multi_label and len(all_labels(data.train)) == 12
    with pytest.raises(TransferError, match="multi-label data comes as a CSV"):
        tftransfer.load_data(tmp_path / "images", (32, 32), multi_label=True)


def test_multi_hot_arrays_and_tf_data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8)
    hot = (rng.random((20, 3)) < 0.5).astype("float32")
    data = tftransfer.load_data((images, hot), (8, 8), class_names=["a", "b", "c"],
                                validation_split=0.25)
    assert data.multi_label and data.class_names == ["a", "b", "c"]
    assert len(all_labels(data.train)) == 15 and len(all_labels(data.validation)) == 5
    pairs = tf.data.Dataset.from_tensor_slices((images, hot))
    from_tf = tftransfer.load_data(pairs, (8, 8), class_names=["a", "b", "c"],
                                   validation_split=0.25)
    assert from_tf.multi_label
    assert len(all_labels(from_tf.train)) == 15
    with pytest.raises(TransferError, match="must be 0 or 1"):
        tftransfer.load_data((images, hot * 2), (8, 8))


def test_identify_counts_each_label_and_the_unlabelled():
    hot = np.array([[1, 0], [1, 1], [0, 0], [0, 0]], "float32")
    batches = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2, 2, 3)), hot)).batch(3)
    identity = identify(batches, 2)
    assert identity.counts == (2, 1) and identity.unlabelled == 2 and identity.multi_label
    changed = hot.copy()
    changed[2, 1] = 1  # One more label on one image: another key.
    relabelled = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2, 2, 3)), changed)).batch(3)
    assert identify(relabelled, 2).key != identity.key


def test_evaluation_rows_keep_every_image_in_order(multi_label_csv):
    path, hot = multi_label_csv
    dataset, names, skipped = multi_label_evaluation(path, (32, 32))
    files = source_files(dataset)
    assert names == ["blue", "green", "red"] and len(files) == len(hot)
    np.testing.assert_array_equal(all_labels(dataset),
                                  np.array([hot[int(f[-7:-4])] for f in files]))


def test_multi_hot_encodes_and_names_an_unknown_label():
    assert multi_hot([["b"], [], ["a", "b"]], ["a", "b"]).tolist() == [
        [0, 1], [0, 0], [1, 1]]
    with pytest.raises(TransferError, match="unknown label 'c'"):
        multi_hot([["c"]], ["a", "b"])
