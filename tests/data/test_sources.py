
import numpy as np
import pytest
import tensorflow as tf

import tftransfer

from conftest import (labels_of, write_image_folder)


def test_csv_source(image_folder_path, tmp_path):
    rows = ["path,label"]
    for folder in sorted(image_folder_path.iterdir()):
        rows += [f"{p},{folder.name}" for p in sorted(folder.iterdir())]
    rows.append("missing.png,red")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    data = tftransfer.data.load_data(tmp_path / "labels.csv", (16, 16),
                                     validation_split=0.25, batch_size=5)
    assert data.class_names == ["blue", "green", "red"]
    assert sorted(np.bincount(labels_of(data.validation))) == [2, 2, 2]
    assert len(labels_of(data.train)) == 18
    assert data.skipped == {str(tmp_path / "missing.png"): "file not found"}


def test_numpy_source_with_string_labels_and_any_size():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8) for i in range(10)]
    images += [rng.integers(0, 255, (25, 25), dtype=np.uint8) for _ in range(10)]
    labels = ["cat"] * 10 + ["dog"] * 10
    data = tftransfer.data.load_data((images, labels), (16, 16), validation_split=0.2)
    assert data.class_names == ["cat", "dog"]
    assert sorted(np.bincount(labels_of(data.validation))) == [2, 2]
    batch, _ = next(iter(data.train))
    assert batch.shape[1:] == (16, 16, 3) and batch.dtype == tf.float32


@pytest.mark.parametrize("as_list", [False, True])
def test_numpy_arrays_are_fitted_as_each_image_alone_would_be(as_list, monkeypatch, caplog):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 20, 30)).astype("float32")  # Grayscale.
    labels = np.arange(8) % 2
    expected = np.stack([tftransfer.data.sources.resize_array(image, (16, 12)) for image in images])
    source = (list(images) if as_list else images, labels)
    for available in (10**12, 1000):  # Then kept in memory, then resized every epoch.
        monkeypatch.setattr(tftransfer.data.cache, "available_memory", lambda: available)
        data = tftransfer.data.load_data(source, (16, 12), validation_split=0,
                                         batch_size=8)
        for _ in range(2):
            batch, batch_labels = next(iter(data.train))
            order = np.argsort([np.flatnonzero((expected == x).all(axis=(1, 2, 3)))[0]
                                for x in batch.numpy().astype(np.uint8)])
            np.testing.assert_array_equal(batch.numpy()[order], expected)
    assert "resizing them every epoch instead" in caplog.text


def test_arrays_and_datasets_of_two_channel_images_are_refused_by_name():
    images, labels = np.zeros((4, 8, 8, 2), np.uint8), np.array([0, 1, 0, 1])
    with pytest.raises(tftransfer.TransferError, match="1, 3 or 4 channels, got 2"):
        tftransfer.load_data((images, labels), (8, 8))
    with pytest.raises(tftransfer.TransferError, match="1, 3 or 4 channels, got 2"):
        tftransfer.load_data(tf.data.Dataset.from_tensor_slices((images, labels)), (8, 8),
                             class_names=["a", "b"])


def test_unknown_sources_name_the_problem(tmp_path):
    with pytest.raises(tftransfer.TransferError, match="CSV file not found"):
        tftransfer.data.load_data(tmp_path / "nope.csv", (8, 8))
    with pytest.raises(tftransfer.TransferError, match="needs class_names"):
        tftransfer.data.load_data(tf.data.Dataset.range(3), (8, 8))
    with pytest.raises(tftransfer.TransferError, match="unknown TFDS dataset"):
        tftransfer.data.load_data("tfds:no_such_dataset_here", (8, 8))


def test_npz_and_saved_dataset_sources(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 20, 20, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2] * 4)
    np.savez(tmp_path / "arrays.npz", x=images, y=labels,
             class_names=np.array(["ant", "bee", "cat"]))
    data = tftransfer.load_data(tmp_path / "arrays.npz", (8, 8), validation_split=0.25,
                                image_cache=True)
    assert data.class_names == ["ant", "bee", "cat"]
    assert len(labels_of(data.train)) == 9 and len(labels_of(data.validation)) == 3

    tf.data.Dataset.from_tensor_slices((images, labels)).save(str(tmp_path / "saved"))
    with pytest.raises(tftransfer.TransferError, match="needs class_names"):
        tftransfer.load_data(tmp_path / "saved", (8, 8))
    data = tftransfer.load_data(tmp_path / "saved", (8, 8), class_names=["a", "b", "c"])
    assert next(iter(data.train))[0].shape[1:] == (8, 8, 3)

    np.savez(tmp_path / "wrong.npz", pictures=images)
    with pytest.raises(tftransfer.TransferError, match="holds pictures; expected"):
        tftransfer.load_data(tmp_path / "wrong.npz", (8, 8))
    with pytest.raises(tftransfer.TransferError, match="differ from those of"):
        tftransfer.load_data(write_image_folder(tmp_path / "folder", 2), (8, 8),
                             class_names=["x", "y", "z"])
