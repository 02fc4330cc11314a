"""Readers: labelled images from folders, CSV files and arrays; `load_data`.

Every source gives the same `DataSplits`. Files are checked first (see
`tftransfer.data.check`); arrays are resized as the first epoch reads them.
"""

import functools
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import tensorflow as tf

from tftransfer.data import cache as data_cache
from tftransfer.data.check import DataReport, check_folder, decode_once, log_skipped
from tftransfer.data.csv_rows import csv_rows
from tftransfer.data.decode import check_channels, fit_pixels
from tftransfer.data.loader import (DataSplits, batched,
                                    check_class_count, file_splits, stratified_split)
from tftransfer.data.multi_hot import (is_multi_label_csv, multi_hot_labels,
                                         multi_label_csv, random_split)
from tftransfer.data.tf_data import dataset_source, tfds_dataset
from tftransfer.defaults import DEFAULT_BATCH_SIZE
from tftransfer.errors import TransferError


def image_folder(path: Union[str, Path], image_size: Sequence[int], *,
                 batch_size: int = DEFAULT_BATCH_SIZE, validation_split: float = 0.2,
                 seed: int = 1337, image_cache: Union[bool, str, Path] = True) -> DataSplits:
    """Reads a folder of labelled images into train and validation datasets.

    Two layouts are understood: `path/<class>/<image>`, split here into
    train and validation (stratified by class and seeded), or
    `path/train/<class>/...` with optional `val/` and `test/` beside it.
    Every file is checked first (see `check_data`); unusable ones are
    skipped, counted and logged by name. The check decodes each file at
    `image_size` once and, with a cache, keeps the pixels, so the first
    epoch does not decode again.

    Args:
        path: The folder.
        image_size: `(height, width)` to resize to, usually `base.input_size`.
        batch_size: Images per batch.
        validation_split: The fraction of each class held out for
            validation when there is no `val/` folder; 0 for none.
        seed: Seeds the split and the shuffling.
        image_cache: Keep the decoded, resized images in memory (`True`; in
            `default_image_cache_dir()` if they would take more than half
            of the available memory); in a folder (a path), in files named
            by the images' paths, sizes and modification times, which later
            runs over the same files read instead of decoding; or not at
            all (`False`: decode every epoch).

    Returns:
        `DataSplits`, which unpacks as `(train, validation, class_names)`.
    """
    report, decoded, paths, split_files = _checked_folder(path, image_size, image_cache)
    if "val" not in split_files:
        split_files.update(stratified_split(split_files["train"], validation_split, seed))
    return file_splits(decoded, paths, split_files, report.class_names,
                        batch_size, seed, report.skipped)


def evaluation_images(path, image_size, *, batch_size=DEFAULT_BATCH_SIZE, image_cache=True):
    """Reads a folder's labelled images, unshuffled, to evaluate a model on.

    Args:
        path: A folder as `image_folder` reads it.
        image_size: `(height, width)`, the model's input size.
        batch_size: Images per batch.
        image_cache: As in `image_folder`.

    Returns:
        `(dataset, class_names, skipped)`: the `test/` split if the folder
        has one, else every image in it (`data.loader.source_files` names
        the file of each example), and `{path: reason}` of every file that
        could not be used.
    """
    report, decoded, paths, split_files = _checked_folder(path, image_size, image_cache)
    chosen = ["test"] if "test" in split_files else list(split_files)
    every = {"test": {name: [i for split in chosen for i in split_files[split].get(name, [])]
                      for name in report.class_names}}
    splits = file_splits(decoded, paths, every, report.class_names, batch_size,
                         0, report.skipped)
    return splits.test, report.class_names, dict(report.skipped)


def split_images(path, image_size, *, batch_size=DEFAULT_BATCH_SIZE, image_cache=True):
    """Reads every split of a folder, unshuffled, with the file of each example.

    Args:
        path: A folder as `image_folder` reads it.
        image_size: `(height, width)`.
        batch_size: Images per batch.
        image_cache: As in `image_folder`.

    Returns:
        `(splits, class_names, skipped)`: `{split: dataset}` (`"train"`,
        and `"val"`, `"test"` where the folder has them), each unshuffled,
        with `data.loader.source_files` naming the file of each example; the
        class names; `{path: reason}` of the files skipped.
    """
    report, decoded, paths, split_files = _checked_folder(path, image_size, image_cache)
    splits = {}
    for split, files in split_files.items():
        made = file_splits(decoded, paths, {"test": files}, report.class_names, batch_size,
                           0, report.skipped)
        if made.test is not None:
            splits[split] = made.test
    return splits, report.class_names, report.skipped


def _checked_folder(path, image_size, image_cache):
    """The data check of a folder: `(report, decoded, paths, {split: {class: [index]}})`."""
    report, decoded, paths = check_folder(path, tuple(image_size), cache=image_cache)
    if report.problems:
        raise TransferError("; ".join(report.problems))
    log_skipped(report)
    positions = {p: i for i, p in enumerate(paths)}
    split_files = {split: {name: [positions[p] for p in files]
                           for name, files in classes.items()}
                   for split, classes in report.used.items()}
    return report, decoded, paths, split_files


def csv_file(path, image_size, *, batch_size=DEFAULT_BATCH_SIZE, validation_split=0.2, seed=1337,
             image_cache=True, multi_label=None, label_sep=" "):
    """Reads labelled images listed in a CSV file of `path,label` rows.

    A header row (`path,label`, or any first row whose path is not a file)
    is skipped. Relative paths are relative to the CSV's folder. Class
    names are the sorted distinct labels. Unusable files are skipped and
    named as in `image_folder`. A `path,labels` header, or `multi_label`,
    reads each row's labels as a set (see `data.multi_hot`).

    Args:
        path: The CSV file.
        image_size: `(height, width)`.
        batch_size: Images per batch.
        validation_split: The fraction of each class held out, stratified
            (for multi-label data, at random).
        seed: Seeds the split and the shuffling.
        image_cache: As in `image_folder`.
        multi_label: `True` reads multi-label rows; `None` decides by the
            header's `labels` column.
        label_sep: What separates a multi-label row's labels.

    Returns:
        `DataSplits`.
    """

    path = Path(path)
    if not path.is_file():
        raise TransferError(f"CSV file not found: {path}")
    if multi_label or (multi_label is None and is_multi_label_csv(path)):
        return multi_label_csv(path, image_size, label_sep=label_sep, batch_size=batch_size,
                               validation_split=validation_split, seed=seed,
                               image_cache=image_cache)
    rows = []
    for number, row in csv_rows(path):
        if len(row) < 2:
            raise TransferError(f"{path}:{number}: expected 'path,label', got {row}")
        file = Path(row[0].strip())
        file = file if file.is_absolute() else path.parent / file
        if number == 1 and not file.exists() and row[1].strip().lower() == "label":
            continue  # The header.
        rows.append((str(file), row[1].strip()))
    class_names = sorted({label for _, label in rows})
    check_class_count(path, class_names)
    paths = [file for file, _ in rows]
    decoded = decode_once(paths, [class_names.index(label) for _, label in rows],
                           tuple(image_size), cache=image_cache)
    files = {name: [] for name in class_names}
    for position, ((_, label), ok) in enumerate(zip(rows, decoded.usable)):
        if ok:
            files[label].append(position)
    empty = [name for name in class_names if not files[name]]
    if empty:
        raise TransferError(f"no usable images for class(es) {', '.join(empty)} in {path}")
    log_skipped(DataReport(len(rows), {"train": files}, decoded.skipped, [], class_names))
    return file_splits(decoded, paths, stratified_split(files, validation_split, seed),
                        class_names, batch_size, seed, decoded.skipped)


def numpy_arrays(images, labels, image_size, *, class_names=None, batch_size=DEFAULT_BATCH_SIZE,
                 validation_split=0.2, seed=1337):
    """Makes datasets from images and labels held in memory.

    The images are resized in parallel as the first epoch reads them and
    kept in memory (unless they would take more than half of it: then they
    are resized every epoch, with a warning).

    Args:
        images: A `(N, height, width, channels)` array (uint8 in `[0, 255]`,
            or float in `[0, 255]`), or a list of `(h, w, c)` arrays of any
            sizes. One or four channels become RGB.
        labels: N ints in `[0, num_classes)`, N class names, or an `(N,
            labels)` array of multi-hot rows (0 and 1) for labels that are
            not exclusive (split at random, not by class).
        image_size: `(height, width)` to resize to, once.
        class_names: The names of the int labels (default: `"0"`, `"1"`,
            ...). Ignored for string labels, whose sorted set is used.
        batch_size: Images per batch.
        validation_split: The fraction of each class held out, stratified.
        seed: Seeds the split and the shuffling.

    Returns:
        `DataSplits`.
    """
    labels = np.asarray(labels)
    multi = labels.ndim == 2 and labels.shape[1] > 1
    labels = labels if multi else labels.reshape(-1)
    if len(images) != len(labels):
        raise TransferError(f"{len(images)} images but {len(labels)} labels")
    if multi:
        labels, class_names = multi_hot_labels(labels, class_names)
    elif labels.dtype.kind in "USO":
        class_names = sorted({str(label) for label in labels})
        index = {name: i for i, name in enumerate(class_names)}
        labels = np.array([index[str(label)] for label in labels], np.int32)
    else:
        labels = labels.astype(np.int32)
        count = int(labels.max()) + 1 if len(labels) else 0
        class_names = list(class_names) if class_names is not None else [
            str(i) for i in range(count)]
        if labels.min(initial=0) < 0 or count > len(class_names):
            raise TransferError(f"labels must be in [0, {len(class_names)}), got "
                                f"[{labels.min()}, {labels.max()}]")
    check_class_count("the labels", class_names)
    image_size = tuple(image_size)
    batch = _image_batch(images, image_size)
    fitted = batch.shape[1:] == (*image_size, 3) and batch.dtype == np.uint8
    if multi:
        splits = random_split(len(labels), validation_split, seed)
    else:
        splits = stratified_split({name: [i for i in np.flatnonzero(labels == label)]
                                   for label, name in enumerate(class_names)},
                                  validation_split, seed)

    def make(split, training):
        indices = sorted(i for ids in splits.get(split, {}).values() for i in ids)
        if not indices:
            return None
        ds = tf.data.Dataset.from_tensor_slices((batch[indices], labels[indices]))
        if not fitted:
            # Resized in parallel as the first epoch reads them, then kept.
            ds = ds.map(functools.partial(_fitted_pair, image_size),
                        num_parallel_calls=tf.data.AUTOTUNE)
            size_bytes = len(indices) * image_size[0] * image_size[1] * 3
            available = data_cache.memory_short_of(size_bytes)
            if available is None:
                ds = ds.cache()
            else:
                data_cache.warn_not_in_memory(size_bytes, available,
                                              "resizing them every epoch instead")
        return batched(ds, len(indices), batch_size, seed, training)

    return DataSplits(make("train", True), make("val", False), class_names)


def load_data(source: object, image_size: Sequence[int], **options) -> DataSplits:
    """Loads labelled images from any supported source.

    Args:
        source: One of
            * a folder of class subfolders (or `train/ val/ test/`);
            * a `.csv` file of `path,label` rows, or of `path,labels` rows
              for multi-label data (`multi_label`, `label_sep`);
            * `"tfds:NAME"` or `"tfds:NAME:SPLIT"` (e.g. `"tfds:tf_flowers"`);
            * `"imagefolder:PATH"`: a TFDS `ImageFolder`
              (`PATH/<split>/<class>/<image>`);
            * an `(images, labels)` tuple of arrays, or an `.npz` file of
              them (`images` and `labels`, or `x` and `y`; optional
              `class_names`);
            * a `tf.data.Dataset` of `(image, label)`, or the folder of one
              saved with `Dataset.save` (pass `class_names`).
        image_size: `(height, width)`.
        **options: Passed to the source's function (`image_folder`,
            `csv_file`, `tfds_dataset`, `numpy_arrays`, `dataset_source`).
            `image_cache` is ignored for arrays, which are in memory already
            (their resized copy is kept in memory when it fits).

    Returns:
        `DataSplits`, which unpacks as `(train, validation, class_names)`.
    """
    image_size = tuple(image_size)
    if not isinstance(source, (tuple, tf.data.Dataset)):
        source = str(source)
        if source.lower().endswith(".npz"):
            source = _arrays_in(source, options)
        elif Path(source, "dataset_spec.pb").is_file():
            source = _saved_dataset(source)
    if isinstance(source, (tuple, tf.data.Dataset)):
        options.pop("label_sep", None)
        options.pop("multi_label", None)  # Multi-hot labels are told by their shape.
    if isinstance(source, tf.data.Dataset):
        if options.get("class_names") is None:
            raise TransferError("a tf.data.Dataset source needs class_names "
                                "(--class-names a,b,c)")
        return dataset_source(source, image_size, options.pop("class_names"), **options)
    if isinstance(source, tuple) and len(source) == 2:
        options.pop("image_cache", None)
        return numpy_arrays(*source, image_size, **options)
    expected = options.pop("class_names", None)
    if not source.lower().endswith(".csv"):
        if options.pop("multi_label", None):
            raise TransferError(f"{source}: multi-label data comes as a CSV with a 'labels' "
                                "column, multi-hot arrays or a tf.data.Dataset of them")
        options.pop("label_sep", None)
    splits = _named_source(source, image_size, options)
    if expected is not None and list(expected) != splits.class_names:
        raise TransferError(f"class names {list(expected)} differ from those of "
                            f"{source}: {splits.class_names}")
    return splits


def _named_source(source, image_size, options):
    """`load_data` for the sources that name their classes themselves."""
    if source.startswith("tfds:"):
        name, _, split = source[len("tfds:"):].partition(":")
        if split:
            options.setdefault("split", split)
        return tfds_dataset(name, image_size, **options)
    if source.startswith("imagefolder:"):
        import tensorflow_datasets as tfds

        root = source[len("imagefolder:"):]
        if not Path(root).is_dir():
            raise TransferError(f"ImageFolder root not found: {root}")
        builder = tfds.folder_dataset.ImageFolder(root)
        if "val" in builder.info.splits and options.get("validation") is None:
            options["validation"] = "val"
        return tfds_dataset(builder, image_size, download=False, **options)
    if source.lower().endswith(".csv"):
        return csv_file(source, image_size, **options)
    return image_folder(source, image_size, **options)


def _arrays_in(path, options):
    """`(images, labels)` from an `.npz` file; its `class_names` go to `options`."""
    if not Path(path).is_file():
        raise TransferError(f"npz file not found: {path}")
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise TransferError(f"cannot read {path}: {error}") from None
    with arrays:
        keys = set(arrays.files)
        for images, labels in (("images", "labels"), ("x", "y")):
            if {images, labels} <= keys:
                try:
                    if "class_names" in keys and options.get("class_names") is None:
                        options["class_names"] = [str(n) for n in arrays["class_names"]]
                    return arrays[images], arrays[labels]
                except (OSError, ValueError) as error:  # Object arrays need pickle: refused.
                    raise TransferError(f"cannot read {path}: {error}; save numeric "
                                        "arrays (and class_names as strings)") from None
    raise TransferError(f"{path} holds {', '.join(sorted(keys)) or 'no arrays'}; "
                        "expected 'images' and 'labels' (or 'x' and 'y')")


def _saved_dataset(path):
    try:
        return tf.data.Dataset.load(path)
    except (tf.errors.OpError, ValueError) as error:
        raise TransferError(f"cannot load the tf.data.Dataset saved in {path}: "
                            f"{error}") from None


def _image_batch(images, image_size):
    """`images` as one `(N, height, width, channels)` array.

    Images of different sizes cannot share an array: those are fitted to
    `image_size` here, one by one.
    """
    if isinstance(images, np.ndarray) and images.dtype != object:
        batch = images[..., None] if images.ndim == 3 else images
        if batch.ndim != 4:
            raise TransferError(f"images must be (N, height, width[, channels]); got "
                                f"shape {images.shape}")
        check_channels(batch.shape[-1])
        return batch
    shapes = {np.shape(image) for image in images}
    if len(shapes) == 1 and len(next(iter(shapes))) in (2, 3):
        return _image_batch(np.stack(images), image_size)
    return np.stack([resize_array(image, image_size) for image in images])


def _fitted_pair(image_size, image, label):
    return fit_pixels(image, image_size), label


def resize_array(image, image_size):
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise TransferError(f"each image must be (height, width, channels); got "
                            f"shape {image.shape}")
    return fit_pixels(tf.convert_to_tensor(image), image_size).numpy()
