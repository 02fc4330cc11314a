import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import tftransfer

from conftest import (labels_of, write_image_folder)


def test_folder_cache_is_reused_by_content_and_rewritten_on_change(tmp_path, caplog):
    root = write_image_folder(tmp_path / "data", 3, fmt="jpg")
    cache = tmp_path / "image_cache"
    abandoned = cache / "images-0123.partial-999999999-dead"
    abandoned.mkdir(parents=True)

    def epoch():
        data = tftransfer.image_folder(root, (16, 16), validation_split=0, image_cache=cache)
        return np.sort(np.concatenate([x.numpy() for x, _ in data.train]).reshape(9, -1),
                       axis=0), data

    first, _ = epoch()
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 1 and entries[0].startswith("images-")  # Abandoned: gone.

    # Same size and modification time: the key holds, so the cached pixels
    # are read and the changed bytes are never decoded.
    target = root / "red" / "000.jpg"
    stat, blob = target.stat(), bytearray(target.read_bytes())
    blob[len(blob) // 2:-2] = bytes(len(blob) // 2 - 2)
    target.write_bytes(bytes(blob))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with caplog.at_level("INFO", logger="tftransfer"):
        again, data = epoch()
    assert "image cache: reusing" in caplog.text and not data.skipped
    assert "data check: reused 9 file(s) decoded by an earlier run" in caplog.text
    np.testing.assert_array_equal(first, again)

    target.write_bytes((root / "red" / "001.jpg").read_bytes())  # A real change.
    changed, _ = epoch()
    assert len(list(cache.iterdir())) == 2
    assert not np.array_equal(first, changed)


@pytest.mark.parametrize("available", [10**12, 1000])
def test_images_that_memory_cannot_hold_are_kept_in_a_folder(
        image_folder_path, tmp_path, monkeypatch, caplog, available):
    monkeypatch.setattr(tftransfer.data.cache, "available_memory", lambda: available)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with caplog.at_level("WARNING", logger="tftransfer"):
        data = tftransfer.image_folder(image_folder_path, (16, 16), validation_split=0)
    folder = tmp_path / "home" / ".cache" / "tftransfer" / "images"
    assert len(labels_of(data.train)) == 24
    if available == 1000:
        assert "more than half of the available memory" in caplog.text
        assert [p.name.split("-")[0] for p in folder.iterdir()] == ["images"]
    else:
        assert not folder.exists() and "image cache" not in caplog.text


def test_tf_data_images_that_memory_cannot_hold_are_kept_in_a_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tftransfer.data.cache, "available_memory", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    arrays = tf.data.Dataset.from_tensor_slices((images, np.arange(6) % 2))
    data = tftransfer.load_data(arrays, (8, 8), class_names=["a", "b"])
    assert len(labels_of(data.train)) == 6
    folder = tmp_path / "home" / ".cache" / "tftransfer" / "images"
    assert {p.name.split("-")[0] for p in folder.iterdir()} == {"dataset"}


def test_a_tf_data_cache_left_half_written_by_a_killed_run_does_not_stop_the_next(
        tmp_path, caplog):
    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    arrays = tf.data.Dataset.from_tensor_slices((images, np.arange(6) % 2))
    tftransfer.load_data(arrays, (8, 8), class_names=["a", "b"], image_cache=tmp_path / "c")
    [entry] = (tmp_path / "c").iterdir()
    # What a run killed while filling the cache leaves: a partial folder
    # holding Dataset.cache's lockfile (in the entry itself, it would stop
    # every later run with AlreadyExistsError).
    shutil.rmtree(entry)
    partial = entry.with_name(entry.name + ".partial-999999999-dead")
    partial.mkdir()
    (partial / "pixels_0.lockfile").write_text("Created at: 0")
    with caplog.at_level("INFO", logger="tftransfer"):
        data = tftransfer.load_data(arrays, (8, 8), class_names=["a", "b"],
                                    image_cache=tmp_path / "c")
        assert len(labels_of(data.train)) == 6 and data.train.cardinality() == 1
        assert "image cache: wrote" in caplog.text
        again = tftransfer.load_data(arrays, (8, 8), class_names=["a", "b"],
                                     image_cache=tmp_path / "c")
        assert len(labels_of(again.train)) == 6
    assert "image cache: reusing" in caplog.text  # Tracing counters do not matter.
    assert [p.name for p in (tmp_path / "c").iterdir()] == [entry.name]
    images[0, 0, 0, 0] ^= 1  # New content: a new entry.
    changed = tf.data.Dataset.from_tensor_slices((images, np.arange(6) % 2))
    tftransfer.load_data(changed, (8, 8), class_names=["a", "b"], image_cache=tmp_path / "c")
    assert len(list((tmp_path / "c").iterdir())) == 2


def test_images_that_fit_neither_memory_nor_disk_are_decoded_every_epoch(
        image_folder_path, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tftransfer.data.cache, "available_memory", lambda: 1000)
    monkeypatch.setattr(tftransfer.data.cache, "free_space", lambda folder: 1000)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with caplog.at_level("WARNING", logger="tftransfer"):
        data = tftransfer.image_folder(image_folder_path, (16, 16), validation_split=0)
    assert "lacks room too, so decoding every epoch instead" in caplog.text
    assert len(labels_of(data.train)) == 24 and not (tmp_path / "home").exists()


def test_an_image_cache_folder_that_cannot_hold_the_images_is_named(
        image_folder_path, tmp_path, monkeypatch):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(tftransfer.TransferError, match=r"cannot write .*file/cache"):
        tftransfer.image_folder(image_folder_path, (16, 16), image_cache=not_a_folder / "cache")
    monkeypatch.setattr(tftransfer.data.cache, "free_space", lambda folder: 10**6)
    with pytest.raises(tftransfer.TransferError, match=r"full.* has 0.0 GB free, the "
                                                       r"decoded images need"):
        tftransfer.image_folder(image_folder_path, (400, 400), image_cache=tmp_path / "full")


def test_tf_data_sources_are_cached_in_a_folder_only_when_their_graph_names_them(
        tmp_path, caplog):
    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    arrays = tf.data.Dataset.from_tensor_slices((images, np.arange(6) % 2))
    data = tftransfer.load_data(arrays, (8, 8), class_names=["a", "b"],
                                image_cache=tmp_path / "c")
    assert len(labels_of(data.train)) == 6
    written = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert len(written) == 1 and written[0].startswith("dataset-train-")
    assert (tmp_path / "c" / written[0] / "length.npy").is_file()

    def generate():
        yield from zip(images, np.arange(6) % 2)

    generated = tf.data.Dataset.from_generator(generate, output_signature=(
        tf.TensorSpec((8, 8, 3), tf.uint8), tf.TensorSpec((), tf.int64)))
    with caplog.at_level("WARNING", logger="tftransfer"):
        data = tftransfer.load_data(generated, (8, 8), class_names=["a", "b"],
                                    image_cache=tmp_path / "c")
    assert len(labels_of(data.train)) == 6
    assert "cached in memory, not in" in caplog.text
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == written


def test_a_dataset_whose_graph_cannot_be_read_is_cached_in_memory(tmp_path, caplog):
    from tftransfer.data.cache import dataset_cache_entry, serialized_graph

    arrays = tf.data.Dataset.from_tensor_slices(np.zeros((2, 3)))
    assert b"TensorSliceDataset" in serialized_graph(arrays)

    class Hidden:  # A dataset of a TensorFlow that no longer shows its graph.
        pass

    assert serialized_graph(Hidden()) is None
    with caplog.at_level("WARNING", logger="tftransfer"):
        assert dataset_cache_entry(Hidden(), tmp_path, "train") == ""
    assert "does not show a dataset's graph" in caplog.text
