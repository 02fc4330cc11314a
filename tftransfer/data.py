"""Data: labelled images in, batched `tf.data` datasets out.

Every source yields `(images, labels)` batches: float32 RGB pixels in
`[0, 255]` at the base's input size, and int32 class indices. The decoding
and resizing here are the same functions that the exported SavedModel runs
on encoded image bytes, so serving sees exactly what training saw.
"""

import dataclasses
import hashlib
import logging
import weakref
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from tftransfer.errors import TransferError

logger = logging.getLogger("tftransfer")

#: File extensions read as images. TensorFlow decodes all four formats.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
_DECODABLE_FORMATS = {"JPEG", "PNG", "GIF", "BMP", "MPO"}
SPLIT_NAMES = ("train", "val", "test")

# Dataset -> a string naming its content, for the feature cache's key.
_SOURCE_KEYS = weakref.WeakKeyDictionary()


@dataclasses.dataclass
class DataSplits:
    """Datasets for one labelled image source.

    Unpacks as `train, validation, class_names = splits`.

    Attributes:
        train: Shuffled `(images, labels)` batches.
        validation: Batches for early stopping, or `None`.
        class_names: Class names, in label order.
        test: Batches of a held-out `test/` split, or `None`.
        skipped: `{path: reason}` for every file that could not be used.
    """

    train: tf.data.Dataset
    validation: Optional[tf.data.Dataset]
    class_names: list
    test: Optional[tf.data.Dataset] = None
    skipped: dict = dataclasses.field(default_factory=dict)

    def __iter__(self):
        return iter((self.train, self.validation, self.class_names))


def register_source(dataset, key):
    """Records what a dataset holds, so that cached features can be reused.

    Args:
        dataset: A `tf.data.Dataset`.
        key: A string that changes whenever the content does (for files:
            their paths, sizes and modification times).

    Returns:
        `dataset`.

    Example:
    >>> ds = register_source(ds, "my-photos-v3")
    """
    _SOURCE_KEYS[dataset] = str(key)
    return dataset


def source_key(dataset):
    """Returns the key `register_source` recorded for a dataset, or `None`."""
    try:
        return _SOURCE_KEYS.get(dataset)
    except TypeError:
        return None


def files_key(paths, labels, *extra):
    """Returns a key naming files by path, size and mtime, with their labels."""
    digest = hashlib.sha256(repr(extra).encode())
    for path, label in zip(paths, labels):
        stat = Path(path).stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{label}\n".encode())
    return "files-" + digest.hexdigest()


def decode_image(contents, image_size):
    """Decodes encoded image bytes to RGB pixels at a fixed size.

    Grayscale and RGBA become RGB; an animated GIF gives its first frame.
    Pixels are resized with antialiasing and rounded to whole values, so
    that a cached uint8 copy equals what the export computes.

    Args:
        contents: A scalar `tf.string` tensor of JPEG, PNG, GIF or BMP bytes.
        image_size: `(height, width)`.

    Returns:
        A float32 tensor of shape `(height, width, 3)` in `[0, 255]`.

    Example:
    >>> decode_image(tf.io.read_file("cat.jpg"), (224, 224)).shape
    TensorShape([224, 224, 3])
    """
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    image = tf.image.resize(image, image_size, antialias=True)
    return tf.clip_by_value(tf.round(image), 0.0, 255.0)


def scan_images(paths):
    """Checks that each file is an image TensorFlow can decode.

    Args:
        paths: File paths.

    Returns:
        `(usable, skipped)`: the usable paths, and `{path: reason}` for the
        others. `len(usable) + len(skipped) == len(paths)`.

    Example:
    >>> usable, skipped = scan_images(["a.jpg", "notes.txt.png"])
    """
    from PIL import Image, UnidentifiedImageError

    usable, skipped = [], {}
    for path in paths:
        try:
            if Path(path).stat().st_size == 0:
                skipped[str(path)] = "empty file"
                continue
            with Image.open(path) as image:
                image_format = image.format
                image.verify()
            if image_format not in _DECODABLE_FORMATS:
                skipped[str(path)] = f"unsupported format {image_format}"
                continue
        except UnidentifiedImageError:
            skipped[str(path)] = "not an image"
            continue
        except (OSError, SyntaxError, ValueError) as error:
            skipped[str(path)] = f"unreadable: {error}"
            continue
        usable.append(str(path))
    return usable, skipped


def list_class_folder(folder):
    """Lists the images of a folder of class subfolders.

    Args:
        folder: A folder with one subfolder per class. Hidden entries are
            ignored.

    Returns:
        `(class_names, files)`, with `files` a dict from class name to
        sorted image paths.
    """
    folder = Path(folder)
    class_dirs = sorted(p for p in folder.iterdir()
                        if p.is_dir() and not p.name.startswith("."))
    files = {
        d.name: sorted(str(p) for p in d.rglob("*")
                       if p.suffix.lower() in IMAGE_EXTENSIONS
                       and not p.name.startswith(".") and p.is_file())
        for d in class_dirs
    }
    return [d.name for d in class_dirs], files


def image_folder(path, image_size, *, batch_size=32, validation_split=0.2,
                 seed=1337, cache=True):
    """Reads a folder of labelled images into train and validation datasets.

    Two layouts are understood: `path/<class>/<image>`, split here into
    train and validation (stratified by class and seeded), or
    `path/train/<class>/...` with optional `val/` and `test/` beside it.
    Unusable files (corrupt, empty, not an image) are skipped, counted and
    logged by name.

    Args:
        path: The folder.
        image_size: `(height, width)` to resize to, usually `base.input_size`.
        batch_size: Images per batch.
        validation_split: The fraction of each class held out for
            validation when there is no `val/` folder; 0 for none.
        seed: Seeds the split and the shuffling.
        cache: Keep decoded, resized images in memory (`True`), in a file
            (a path prefix), or not at all (`False`).

    Returns:
        `DataSplits`, which unpacks as `(train, validation, class_names)`.

    Example:
    >>> train, val, class_names = image_folder("flowers/", (224, 224))
    """
    root = Path(path)
    if not root.is_dir():
        raise TransferError(f"data folder not found: {root}")
    image_size = tuple(image_size)
    has_splits = (root / "train").is_dir() and any(
        p.is_dir() for p in (root / "train").iterdir())
    split_files = {}
    if has_splits:
        class_names, split_files["train"] = list_class_folder(root / "train")
        for split in ("val", "test"):
            if (root / split).is_dir():
                names, split_files[split] = list_class_folder(root / split)
                unknown = sorted(set(names) - set(class_names))
                if unknown:
                    raise TransferError(f"{root / split} has classes that train/ "
                                        f"lacks: {', '.join(unknown)}")
    else:
        class_names, files = list_class_folder(root)
    _check_classes(root / "train" if has_splits else root, class_names)

    skipped = {}

    def usable(files_by_class, where):
        kept = {}
        for name in class_names:
            good, bad = scan_images(files_by_class.get(name, []))
            skipped.update(bad)
            kept[name] = good
        empty = [n for n in class_names if not kept[n]] if where == "train" else []
        if empty:
            raise TransferError(f"no usable images for class(es) {', '.join(empty)} "
                                f"in {root}")
        return kept

    if has_splits:
        split_files = {s: usable(f, s) for s, f in split_files.items()}
    else:
        split_files = _stratified_split(usable(files, "train"), validation_split, seed)
    _log_skipped(skipped)

    def make(split, training):
        if split not in split_files:
            return None
        paths, labels = _flatten(split_files[split], class_names)
        if not paths:
            return None
        return _dataset(paths, labels, image_size, batch_size, seed,
                        training=training, cache=_cache_for(cache, split))

    return DataSplits(make("train", True), make("val", False), class_names,
                      test=make("test", False), skipped=skipped)


def _check_classes(folder, class_names):
    if len(class_names) < 2:
        found = f" ({', '.join(class_names)})" if class_names else ""
        raise TransferError(f"{folder} has {len(class_names)} class folder(s){found}; "
                            "a classifier needs at least 2")


def _stratified_split(files, validation_split, seed):
    if not 0 <= validation_split < 1:
        raise TransferError(f"validation_split must be in [0, 1), got {validation_split}")
    rng = np.random.default_rng(seed)
    train, val = {}, {}
    for name, paths in files.items():
        order = [paths[i] for i in rng.permutation(len(paths))]
        count = min(int(round(len(paths) * validation_split)), len(paths) - 1)
        val[name], train[name] = sorted(order[:count]), sorted(order[count:])
    splits = {"train": train}
    if any(val.values()):
        splits["val"] = val
    return splits


def _flatten(files, class_names):
    paths, labels = [], []
    for label, name in enumerate(class_names):
        paths += files.get(name, [])
        labels += [label] * len(files.get(name, []))
    return paths, labels


def _cache_for(cache, split):
    if cache is True:
        return ""
    if not cache:
        return None
    return f"{cache}-{split}"


def _dataset(paths, labels, image_size, batch_size, seed, *, training, cache):
    def load(path, label):
        image = decode_image(tf.io.read_file(path), image_size)
        return tf.cast(image, tf.uint8), label

    ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int32)))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if cache is not None:
        ds = ds.cache(cache)
    if training:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y),
                num_parallel_calls=tf.data.AUTOTUNE)
    return register_source(ds.prefetch(tf.data.AUTOTUNE),
                           files_key(paths, labels, tuple(image_size)))


def _log_skipped(skipped):
    if not skipped:
        return
    logger.warning("skipped %d unusable file(s):", len(skipped))
    for path, reason in sorted(skipped.items()):
        logger.warning("  %s: %s", path, reason)
