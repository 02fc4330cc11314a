import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tftransfer
from tftransfer.data import check_images, decode_image

from conftest import write_bad_corpus, write_image_folder


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
    assert train.cardinality() == 5 and validation.cardinality() == 2
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


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "messy"
    usable, skipped = write_bad_corpus(root)
    return root, usable, skipped


def relative(root, paths):
    return {str(p)[len(str(root)) + 1:] for p in paths}


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


def test_decode_image_scales_large_jpegs_consistently(tmp_path):
    big = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (400, 640, 3), dtype=np.uint8)).save(big)
    contents = tf.io.read_file(str(big))
    scaled = decode_image(contents, (48, 48))  # Decoded at 1/8 scale: 50x80.
    full = tf.image.resize(tf.io.decode_jpeg(contents, channels=3, ratio=8), (48, 48))
    np.testing.assert_allclose(scaled, tf.clip_by_value(tf.round(full), 0, 255))
    assert decode_image(contents, (300, 300)).shape == (300, 300, 3)  # Full scale.


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("size", [(37, 51), (101, 131)])  # Shrunk, enlarged.
def test_decoded_pixels_are_rounded_without_wrapping(tmp_path, suffix, size):
    # Black, stripes, white: resized to an odd size, the pixels land on 0,
    # 255 and between; a plain cast that overflowed would turn 255.x into 0.
    stripes = np.zeros((64, 90, 3), np.uint8)
    stripes[:, 30:60:2] = 255
    stripes[:, 60:] = 255
    path = tmp_path / f"stripes{suffix}"
    Image.fromarray(stripes).save(path, quality=100)
    contents = tf.io.read_file(str(path))
    pixels = decode_image(contents, size).numpy()
    raw = tf.io.decode_image(contents, channels=3)
    resized = tf.image.resize(raw, size, antialias=suffix == ".png")
    np.testing.assert_array_equal(pixels, tf.saturate_cast(tf.round(resized), tf.uint8))
    assert pixels.min() == 0 and pixels.max() == 255


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
    expected = np.stack([tftransfer.data._resize_array(image, (16, 12)) for image in images])
    source = (list(images) if as_list else images, labels)
    for available in (10**12, 1000):  # Then kept in memory, then resized every epoch.
        monkeypatch.setattr(tftransfer.data, "_available_memory", lambda: available)
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


def test_tf_data_source_is_resized_and_split():
    images = np.random.default_rng(0).uniform(0, 255, (12, 20, 20, 1)).astype("float32")
    labels = np.array([0, 1, 2] * 4)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(5)
    data = tftransfer.data.load_data(ds, (8, 8), class_names=["a", "b", "c"],
                                     validation_split=0.25, batch_size=4)
    assert sorted(np.bincount(labels_of(data.validation))) == [1, 1, 1]
    assert len(labels_of(data.train)) == 9
    assert next(iter(data.train))[0].shape[1:] == (8, 8, 3)
    # Known lengths, for progress bars and the fine-tuning schedule.
    assert data.train.cardinality() == 3 and data.validation.cardinality() == 1


def unknown_length_pairs(count, calls):
    """`count` 8x8 images of unknown length; `calls` grows by one per image made."""
    images = np.random.default_rng(0).integers(0, 255, (count, 8, 8, 3), dtype=np.uint8)

    def touched(image, label):
        image = tf.numpy_function(lambda x: (calls.append(1), x)[1], [image], tf.uint8)
        image.set_shape((8, 8, 3))
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(count) % 2))
    return ds.filter(lambda image, label: True).map(touched)


@pytest.mark.parametrize("validation_split", [0, 0.2])
def test_tf_data_sources_of_unknown_length_are_counted_by_the_pass_that_fills_the_cache(
        validation_split):
    calls = []
    ds = unknown_length_pairs(10, calls)
    assert ds.cardinality() == tf.data.UNKNOWN_CARDINALITY
    data = tftransfer.load_data(ds, (8, 8), class_names=["a", "b"], batch_size=4,
                                validation_split=validation_split)
    train_images = 8 if validation_split else 10
    assert data.train.cardinality() == -(-train_images // 4)
    for _ in range(2):
        assert len(labels_of(data.train)) == train_images
    if validation_split:
        assert data.validation.cardinality() == 1 and len(labels_of(data.validation)) == 2
    assert len(calls) == 10  # Each image made once; the epochs read the cache.


def test_keras_counts_the_steps_it_runs_on_a_source_of_unknown_length():
    # Keras 3.15 counts one step more per epoch on a dataset of unknown length.
    data = tftransfer.load_data(unknown_length_pairs(10, []), (8, 8),
                                class_names=["a", "b"], batch_size=4)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data.train, epochs=2, verbose=0, shuffle=False)
    assert int(model.optimizer.iterations) == 2 * 3


def test_a_tf_data_source_that_repeats_forever_is_an_error():
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((2, 8, 8, 3), np.uint8), [0, 1]))
    with pytest.raises(tftransfer.TransferError, match="training dataset repeats forever"):
        # With a split, it would never get past the pass over the labels.
        tftransfer.load_data(ds.repeat(), (8, 8), class_names=["a", "b"],
                             validation_split=0.5)
    with pytest.raises(tftransfer.TransferError, match="validation dataset repeats"):
        tftransfer.data.dataset_source(ds, (8, 8), ["a", "b"], validation=ds.repeat())


def test_tfds_source_offline_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=20):
        data = tftransfer.data.load_data("tfds:tf_flowers", (32, 32), batch_size=4,
                                         validation_split=0.25)
        assert data.class_names == ["dandelion", "daisy", "tulips", "sunflowers", "roses"]
        train, validation = labels_of(data.train), labels_of(data.validation)
    assert len(train) + len(validation) == 20 and 3 <= len(validation) <= 7
    images, _ = next(iter(data.train))
    assert images.shape == (4, 32, 32, 3)


def test_tfds_image_folder_source(split_folder_path):
    data = tftransfer.data.load_data(f"imagefolder:{split_folder_path}", (16, 16),
                                     batch_size=4)
    assert data.class_names == ["blue", "green", "red"]
    assert len(labels_of(data.train)) == 18 and len(labels_of(data.validation)) == 9


def test_unknown_sources_name_the_problem(tmp_path):
    with pytest.raises(tftransfer.TransferError, match="CSV file not found"):
        tftransfer.data.load_data(tmp_path / "nope.csv", (8, 8))
    with pytest.raises(tftransfer.TransferError, match="needs class_names"):
        tftransfer.data.load_data(tf.data.Dataset.range(3), (8, 8))
    with pytest.raises(tftransfer.TransferError, match="unknown TFDS dataset"):
        tftransfer.data.load_data("tfds:no_such_dataset_here", (8, 8))


def test_class_counts(image_folder_path):
    data = tftransfer.image_folder(image_folder_path, (8, 8), validation_split=0.25)
    assert tftransfer.data.class_counts(data.train, 3).tolist() == [6, 6, 6]


def write_one_image_per_class(root):
    """One file per class folder, so that a label names its file.

    JPEGs of several sizes need each DCT scale for a 24x24 target (1/8,
    1/4, 1/2 and full), progressive and with a large EXIF block; the other
    formats take the antialiased path.
    """
    rng = np.random.default_rng(1)

    def photo(height, width):
        small = rng.integers(0, 255, (max(height // 8, 1), max(width // 8, 1), 3),
                             dtype=np.uint8)
        return Image.fromarray(small).resize((width, height), Image.BILINEAR)

    exif = Image.Exif()
    exif[0x010E] = "x" * 30_000  # ImageDescription: pushes the frame header back.
    writers = {
        "a_scale8.jpg": lambda p: photo(200, 260).save(p, quality=90),
        "b_scale4.jpg": lambda p: photo(100, 130).save(p, quality=90),
        "c_scale2.jpg": lambda p: photo(50, 70).save(p, quality=90),
        "d_full.jpg": lambda p: photo(30, 47).save(p, quality=90),
        "e_progressive.jpg": lambda p: photo(120, 90).save(p, progressive=True),
        "f_exif.jpg": lambda p: photo(64, 64).save(p, exif=exif),
        "g_cmyk.jpg": lambda p: photo(60, 80).convert("CMYK").save(p),
        "h_big.png": lambda p: photo(90, 70).save(p),
        "i_gray.png": lambda p: photo(20, 20).convert("L").save(p),
        "j_anim.gif": lambda p: photo(40, 40).save(p, save_all=True,
                                                   append_images=[photo(40, 40)]),
        "k_bitmap.bmp": lambda p: photo(50, 30).save(p),
    }
    for name, write in writers.items():
        (root / name.split(".")[0]).mkdir(parents=True)
        write(root / name.split(".")[0] / name)
    return root


@pytest.mark.parametrize("cache", [True, False, "folder"])
def test_training_pixels_are_what_the_export_decodes(tmp_path, cache):
    root = write_one_image_per_class(tmp_path / "formats")
    cache = tmp_path / "image_cache" if cache == "folder" else cache
    data = tftransfer.image_folder(root, (24, 24), batch_size=64, validation_split=0,
                                   cache=cache)
    images, labels = next(iter(data.train))
    assert len(labels) == len(data.class_names) == 11 and not data.skipped
    for image, label in zip(images.numpy(), labels.numpy()):
        folder = root / data.class_names[label]
        path = next(folder.iterdir())
        expected = decode_image(tf.io.read_file(str(path)), (24, 24)).numpy()
        np.testing.assert_array_equal(image, expected, err_msg=path.name)


def test_jpeg_headers_are_read_without_pil_as_pil_reads_them(tmp_path):
    from tftransfer.data import _read_header, _read_header_with_pil

    root = write_one_image_per_class(tmp_path / "formats")
    for path in sorted(root.rglob("*.*")):
        header = _read_header(str(path))
        assert header[1:] == _read_header_with_pil(str(path))[1:], path.name
        if path.suffix == ".jpg":
            assert header[0] == "JPEG"
        scale = {"a": 8, "b": 4, "c": 2, "d": 1}.get(path.name[0])
        if scale:
            assert tftransfer.data.jpeg_ratio(*header[1:], (24, 24)) == scale


def test_the_check_decodes_once_and_the_first_epoch_reads_its_pixels(tmp_path):
    root = write_image_folder(tmp_path / "data", 4)
    cached = tftransfer.image_folder(root, (16, 16), validation_split=0.25)
    uncached = tftransfer.image_folder(root, (16, 16), validation_split=0.25, cache=False)
    for path in root.rglob("*.png"):
        path.write_bytes(b"gone")
    # Every image was decoded by the check: the epochs read what it kept.
    for _ in range(2):
        assert len(labels_of(cached.train)) == 9
    assert len(labels_of(cached.validation)) == 3
    with pytest.raises(tf.errors.InvalidArgumentError):
        labels_of(uncached.train)  # Without a cache, every epoch decodes again.


def test_class_counts_come_from_the_loader_without_a_pass(tmp_path):
    root = write_image_folder(tmp_path / "data", 4)
    (root / "red" / "003.png").unlink()
    data = tftransfer.image_folder(root, (16, 16), validation_split=0, cache=False)
    for path in root.rglob("*.png"):
        path.unlink()  # A pass over the data would now fail.
    assert tftransfer.data.class_counts(data.train, 3).tolist() == [4, 4, 3]


def test_folder_cache_is_reused_by_content_and_rewritten_on_change(tmp_path, caplog):
    root = write_image_folder(tmp_path / "data", 3, fmt="jpg")
    cache = tmp_path / "image_cache"
    abandoned = cache / "images-0123.partial-999999999-dead"
    abandoned.mkdir(parents=True)

    def epoch():
        data = tftransfer.image_folder(root, (16, 16), validation_split=0, cache=cache)
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
    monkeypatch.setattr(tftransfer.data, "_available_memory", lambda: available)
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
    monkeypatch.setattr(tftransfer.data, "_available_memory", lambda: 1000)
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
    tftransfer.load_data(arrays, (8, 8), class_names=["a", "b"], cache=tmp_path / "c")
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
                                    cache=tmp_path / "c")
        assert len(labels_of(data.train)) == 6 and data.train.cardinality() == 1
        assert "image cache: wrote" in caplog.text
        again = tftransfer.load_data(arrays, (8, 8), class_names=["a", "b"],
                                     cache=tmp_path / "c")
        assert len(labels_of(again.train)) == 6
    assert "image cache: reusing" in caplog.text  # Tracing counters do not matter.
    assert [p.name for p in (tmp_path / "c").iterdir()] == [entry.name]
    images[0, 0, 0, 0] ^= 1  # New content: a new entry.
    changed = tf.data.Dataset.from_tensor_slices((images, np.arange(6) % 2))
    tftransfer.load_data(changed, (8, 8), class_names=["a", "b"], cache=tmp_path / "c")
    assert len(list((tmp_path / "c").iterdir())) == 2


def test_images_that_fit_neither_memory_nor_disk_are_decoded_every_epoch(
        image_folder_path, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tftransfer.data, "_available_memory", lambda: 1000)
    monkeypatch.setattr(tftransfer.data, "_free_space", lambda folder: 1000)
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
        tftransfer.image_folder(image_folder_path, (16, 16), cache=not_a_folder / "cache")
    monkeypatch.setattr(tftransfer.data, "_free_space", lambda folder: 10**6)
    with pytest.raises(tftransfer.TransferError, match=r"full.* has 0.0 GB free, the "
                                                       r"decoded images need"):
        tftransfer.image_folder(image_folder_path, (400, 400), cache=tmp_path / "full")


def test_cached_order_is_fixed_so_workers_shard_the_same_sequence(tmp_path):
    root = write_image_folder(tmp_path / "data", 10)
    options = tf.data.Options()
    options.deterministic = True  # As `distribute_dataset` sets it.
    epochs = [labels_of(tftransfer.image_folder(root, (16, 16), validation_split=0,
                                                seed=5).train.with_options(options))
              for _ in range(3)]
    np.testing.assert_array_equal(epochs[0], epochs[1])
    np.testing.assert_array_equal(epochs[0], epochs[2])


def test_npz_and_saved_dataset_sources(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 20, 20, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2] * 4)
    np.savez(tmp_path / "arrays.npz", x=images, y=labels,
             class_names=np.array(["ant", "bee", "cat"]))
    data = tftransfer.load_data(tmp_path / "arrays.npz", (8, 8), validation_split=0.25,
                                cache=True)
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


def test_tf_data_sources_are_cached_in_a_folder_only_when_their_graph_names_them(
        tmp_path, caplog):
    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    arrays = tf.data.Dataset.from_tensor_slices((images, np.arange(6) % 2))
    data = tftransfer.load_data(arrays, (8, 8), class_names=["a", "b"],
                                cache=tmp_path / "c")
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
                                    cache=tmp_path / "c")
    assert len(labels_of(data.train)) == 6
    assert "cached in memory, not in" in caplog.text
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == written
