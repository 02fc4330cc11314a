"""Data: labelled images in, batched `tf.data` datasets out.

Every source (an image folder, a CSV of paths and labels, a TFDS name or
`ImageFolder`, numpy arrays, a `tf.data.Dataset`) gives the same
`DataSplits`: `(images, labels)` batches of float32 RGB pixels in
`[0, 255]` at the base's input size, int32 class indices, and the class
names in label order. `load_data` picks the source from its argument.

Images are decoded and resized once, early, in parallel; the resized uint8
pixels are cached (in memory or in a file), so later epochs skip decoding.
The decoding here is the same function that the exported SavedModel runs
on encoded image bytes, so serving sees exactly what training saw.

Files are checked before training (`check_images`): every file that cannot
be used is skipped, counted and named with its reason, and found = used +
skipped always holds.
"""

import dataclasses
import hashlib
import logging
import os
import weakref
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from tftransfer.errors import TransferError

logger = logging.getLogger("tftransfer")

#: File extensions read as images; TensorFlow decodes all these formats.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
_DECODABLE_FORMATS = {"JPEG", "PNG", "GIF", "BMP", "MPO", "WEBP"}
# Larger images would need gigabytes to decode.
MAX_PIXELS = 200_000_000
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

    Grayscale, paletted, 16-bit, CMYK and RGBA images become 8-bit RGB; an
    animated GIF gives its first frame. A JPEG at least twice the target
    size is decoded at 1/2, 1/4 or 1/8 scale by libjpeg (still at least
    the target size) and resized bilinearly; other formats are resized with
    antialiasing. Pixels are rounded to whole values, so that a cached
    uint8 copy equals what the export computes.

    Args:
        contents: A scalar `tf.string` tensor of JPEG, PNG, GIF or BMP bytes.
        image_size: `(height, width)`.

    Returns:
        A float32 tensor of shape `(height, width, 3)` in `[0, 255]`.

    Example:
    >>> decode_image(tf.io.read_file("cat.jpg"), (224, 224)).shape
    TensorShape([224, 224, 3])
    """
    height, width = image_size

    def scaled_jpeg():
        shape = tf.image.extract_jpeg_shape(contents)
        # The largest of the scales 1/8, 1/4, 1/2 that stays >= the target.
        fits = [tf.logical_and(shape[0] // r >= height, shape[1] // r >= width)
                for r in (8, 4, 2)]
        branch = tf.argmax(tf.stack([*fits, True]))
        image = tf.switch_case(tf.cast(branch, tf.int32), [
            lambda r=r: tf.io.decode_jpeg(contents, channels=3, ratio=r,
                                          fancy_upscaling=False)
            for r in (8, 4, 2, 1)])
        # What is left to shrink is less than 2x, where bilinear barely
        # aliases and runs twice as fast as antialiased resizing.
        return tf.image.resize(image, image_size)

    def any_image():
        image = tf.io.decode_image(contents, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return tf.image.resize(image, image_size, antialias=True)

    image = tf.cond(tf.io.is_jpeg(contents), scaled_jpeg, any_image)
    return tf.clip_by_value(tf.round(image), 0.0, 255.0)


def check_images(paths, *, workers=None):
    """Checks that each file is an image that training can use.

    Each file is opened (to name its format) and decoded by TensorFlow, the
    decoder that training uses, so a file that passes cannot fail
    mid-epoch. JPEGs are decoded at 1/8 scale here, which still reads every
    byte of the compressed data.

    Args:
        paths: File paths.
        workers: Threads that decode in parallel (default: one per core).

    Returns:
        `(usable, skipped)`: the usable paths, in order, and
        `{path: reason}` for the others. `len(usable) + len(skipped) ==
        len(paths)`.

    Example:
    >>> usable, skipped = check_images(["a.jpg", "notes.txt.png"])
    >>> skipped
    {'notes.txt.png': 'not an image'}
    """
    from concurrent.futures import ThreadPoolExecutor

    paths = [str(p) for p in paths]
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        reasons = list(pool.map(_problem_with, paths))
    usable = [p for p, reason in zip(paths, reasons) if reason is None]
    return usable, {p: reason for p, reason in zip(paths, reasons) if reason}


def _problem_with(path):
    """Returns why an image file cannot be used, or `None` if it can."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image_format, (width, height) = image.format, image.size
    except UnidentifiedImageError:
        return "not an image"
    except Image.DecompressionBombError:
        return "too large to decode"
    except OSError as error:
        return f"unreadable: {error.strerror or error}"
    if image_format not in _DECODABLE_FORMATS:
        return f"unsupported format {image_format}"
    if width * height > MAX_PIXELS:
        return f"too large: {width}x{height} pixels"
    try:
        contents = tf.io.read_file(path)
        if image_format in ("JPEG", "MPO"):
            tf.io.decode_jpeg(contents, channels=3, ratio=8)
        else:
            tf.io.decode_image(contents, channels=3, expand_animations=False)
    except tf.errors.OpError as error:
        message = error.message.split("}}")[-1].strip().splitlines()[0]
        message = message.split(" [Op:")[0]
        return f"cannot decode {image_format}: {message}"
    return None


def list_class_folder(folder):
    """Lists the files of a folder of class subfolders.

    Symbolic links are followed, except into a folder already visited (a
    loop). Hidden files and files without an image extension are listed as
    skipped, so that nothing vanishes unreported.

    Args:
        folder: A folder with one subfolder per class. Hidden subfolders
            are not classes.

    Returns:
        `(class_names, files, skipped)`: the sorted class names, a dict from
        class name to its sorted image paths, and `{path: reason}` for the
        files that are not candidates.
    """
    folder = Path(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        raise TransferError(f"cannot list {folder}: {error.strerror}") from None
    class_dirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    files, skipped = {}, {}
    for class_dir in class_dirs:
        files[class_dir.name] = []
        for path, reason in _walk(class_dir):
            if reason is None and path.name.startswith("."):
                reason = "hidden file"
            if reason is None and path.suffix.lower() not in IMAGE_EXTENSIONS:
                reason = f"not an image extension ({path.suffix or 'none'})"
            if reason is None:
                files[class_dir.name].append(str(path))
            else:
                skipped[str(path)] = reason
    return [d.name for d in class_dirs], files, skipped


def _walk(folder, seen=None):
    """Yields `(path, None)` per file below `folder`, `(path, reason)` per problem."""
    seen = set() if seen is None else seen
    real = os.path.realpath(folder)
    if real in seen:
        yield folder, "symlink loop (a folder already listed)"
        return
    seen.add(real)
    try:
        children = sorted(folder.iterdir())
    except OSError as error:
        yield folder, f"unreadable folder: {error.strerror}"
        return
    for child in children:
        try:
            is_dir, is_file = child.is_dir(), child.is_file()
        except OSError as error:  # Too many levels of symbolic links.
            yield child, f"unreadable: {error.strerror}"
            continue
        if is_dir:
            yield from _walk(child, seen)
        elif is_file:
            yield child, None
        else:
            yield child, ("broken or looping symlink" if child.is_symlink()
                          else "not a regular file")


@dataclasses.dataclass
class DataReport:
    """What `check_data` found in a folder of labelled images.

    Attributes:
        found: Every file under the class folders.
        used: `{split: {class_name: [path, ...]}}` of the usable images.
        skipped: `{path: reason}` for every file that cannot be used.
        problems: Folder-level problems that stop training (too few
            classes, a class with no usable image).
        class_names: The class names, in label order.
    """

    found: int
    used: dict
    skipped: dict
    problems: list
    class_names: list

    @property
    def used_count(self):
        """The number of usable images."""
        return sum(len(paths) for split in self.used.values() for paths in split.values())

    def summary(self):
        """A one-line account: found = used + skipped."""
        return (f"{self.found} file(s) found = {self.used_count} used + "
                f"{len(self.skipped)} skipped")


def check_data(path):
    """Checks a folder of labelled images and reports every unusable file.

    Args:
        path: A folder of class subfolders, or with `train/` (and optional
            `val/`, `test/`) folders of class subfolders.

    Returns:
        A `DataReport`. `found == used_count + len(skipped)`.

    Example:
    >>> report = check_data("photos/")
    >>> print(report.summary())
    1203 file(s) found = 1201 used + 2 skipped
    """
    root = Path(path)
    if not root.is_dir():
        raise TransferError(f"data folder not found: {root}")
    layout = _layout(root)
    class_names, _, _ = list_class_folder(layout["train"])
    found, used, skipped, problems = 0, {}, {}, []
    if len(class_names) < 2:
        found_names = f" ({', '.join(class_names)})" if class_names else ""
        problems.append(f"{layout['train']} has {len(class_names)} class folder(s)"
                        f"{found_names}; a classifier needs at least 2")
    for split, folder in layout.items():
        names, files, not_candidates = list_class_folder(folder)
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            problems.append(f"{folder} has classes that {layout['train']} lacks: "
                            f"{', '.join(unknown)}")
        found += len(not_candidates) + sum(len(f) for f in files.values())
        skipped.update(not_candidates)
        used[split] = {}
        for name in names:
            good, bad = check_images(files[name])
            skipped.update(bad)
            used[split][name] = good
        if split == "train":
            empty = [n for n in class_names if not used[split].get(n)]
            if empty:
                problems.append(f"no usable images for class(es) {', '.join(empty)} "
                                f"in {folder}")
    return DataReport(found, used, skipped, problems, class_names)


def _layout(root):
    """`{"train": folder, "val": ..., "test": ...}` for either folder layout."""
    train = root / "train"
    if train.is_dir() and any(p.is_dir() for p in train.iterdir()):
        return {split: root / split for split in SPLIT_NAMES if (root / split).is_dir()}
    return {"train": root}


def image_folder(path, image_size, *, batch_size=32, validation_split=0.2,
                 seed=1337, cache=True):
    """Reads a folder of labelled images into train and validation datasets.

    Two layouts are understood: `path/<class>/<image>`, split here into
    train and validation (stratified by class and seeded), or
    `path/train/<class>/...` with optional `val/` and `test/` beside it.
    Every file is checked first (see `check_data`); unusable ones are
    skipped, counted and logged by name.

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
    report = check_data(path)
    if report.problems:
        raise TransferError("; ".join(report.problems))
    _log_skipped(report)
    split_files = dict(report.used)
    if "val" not in split_files:
        split_files.update(_stratified_split(split_files["train"], validation_split, seed))
    return _file_splits(split_files, report.class_names, image_size, batch_size, seed,
                        cache, report.skipped)


def csv_file(path, image_size, *, batch_size=32, validation_split=0.2, seed=1337,
             cache=True):
    """Reads labelled images listed in a CSV file of `path,label` rows.

    A header row (`path,label`, or any first row whose path is not a file)
    is skipped. Relative paths are relative to the CSV's folder. Class
    names are the sorted distinct labels. Unusable files are skipped and
    named as in `image_folder`.

    Args:
        path: The CSV file.
        image_size: `(height, width)`.
        batch_size: Images per batch.
        validation_split: The fraction of each class held out, stratified.
        seed: Seeds the split and the shuffling.
        cache: As in `image_folder`.

    Returns:
        `DataSplits`.

    Example:
    >>> train, val, class_names = csv_file("labels.csv", (224, 224))
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise TransferError(f"CSV file not found: {path}")
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise TransferError(f"{path}:{number}: expected 'path,label', got {row}")
            file = Path(row[0].strip())
            file = file if file.is_absolute() else path.parent / file
            if number == 1 and not file.exists() and row[1].strip().lower() == "label":
                continue  # The header.
            rows.append((str(file), row[1].strip()))
    class_names = sorted({label for _, label in rows})
    _check_class_count(path, class_names)
    missing = {f: "file not found" for f, _ in rows if not os.path.exists(f)}
    usable, skipped = check_images([f for f, _ in rows if f not in missing])
    skipped.update(missing)
    usable = set(usable)
    files = {name: [] for name in class_names}
    for file, label in rows:
        if file in usable:
            files[label].append(file)
    empty = [name for name in class_names if not files[name]]
    if empty:
        raise TransferError(f"no usable images for class(es) {', '.join(empty)} in {path}")
    _log_skipped(DataReport(len(rows), {"train": files}, skipped, [], class_names))
    return _file_splits(_stratified_split(files, validation_split, seed), class_names,
                        image_size, batch_size, seed, cache, skipped)


def numpy_arrays(images, labels, image_size, *, class_names=None, batch_size=32,
                 validation_split=0.2, seed=1337):
    """Makes datasets from images and labels held in memory.

    Args:
        images: A `(N, height, width, channels)` array (uint8 in `[0, 255]`,
            or float in `[0, 255]`), or a list of `(h, w, c)` arrays of any
            sizes. One or four channels become RGB.
        labels: N ints in `[0, num_classes)`, or N class names.
        image_size: `(height, width)` to resize to, once.
        class_names: The names of the int labels (default: `"0"`, `"1"`,
            ...). Ignored for string labels, whose sorted set is used.
        batch_size: Images per batch.
        validation_split: The fraction of each class held out, stratified.
        seed: Seeds the split and the shuffling.

    Returns:
        `DataSplits`.

    Example:
    >>> (x, y), _ = keras.datasets.cifar10.load_data()
    >>> train, val, class_names = numpy_arrays(x, y.ravel(), (96, 96))
    """
    labels = np.asarray(labels).reshape(-1)
    if len(images) != len(labels):
        raise TransferError(f"{len(images)} images but {len(labels)} labels")
    if labels.dtype.kind in "USO":
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
    _check_class_count("the labels", class_names)
    resized = np.stack([_resize_array(image, image_size) for image in images])
    digest = hashlib.sha256(resized.tobytes())
    digest.update(labels.tobytes())
    by_class = {name: [i for i in np.flatnonzero(labels == label)]
                for label, name in enumerate(class_names)}
    splits = _stratified_split(by_class, validation_split, seed)

    def make(split, training):
        indices = sorted(i for ids in splits.get(split, {}).values() for i in ids)
        if not indices:
            return None
        ds = tf.data.Dataset.from_tensor_slices((resized[indices], labels[indices]))
        key = f"numpy-{digest.hexdigest()}-{split}-{validation_split}-{seed}"
        return register_source(_batched(ds, len(indices), batch_size, seed, training), key)

    return DataSplits(make("train", True), make("val", False), class_names)


def dataset_source(dataset, image_size, class_names, *, validation=None, batch_size=32,
                   validation_split=0.0, seed=1337, cache=True):
    """Adapts an existing `tf.data.Dataset` of `(image, label)` pairs.

    Images of any size (batched or not, uint8 or float in `[0, 255]`, one,
    three or four channels) are resized once to `image_size`.

    Args:
        dataset: Unbatched `(image, label)` pairs, or batches of them.
        image_size: `(height, width)`.
        class_names: The class names, in label order.
        validation: A dataset like `dataset` for validation, or `None`.
        batch_size: Images per batch.
        validation_split: Without `validation`, the fraction of each class
            held out (stratified, seeded; costs one pass over the labels).
        seed: Seeds the split and the shuffling.
        cache: Cache the resized images in memory (`True`), a file (a path
            prefix) or not at all (`False`).

    Returns:
        `DataSplits`.

    Example:
    >>> ds = tf.data.Dataset.from_tensor_slices((images, labels))
    >>> train, val, class_names = dataset_source(ds, (224, 224), ["cat", "dog"])
    """
    _check_class_count("class_names", list(class_names))
    pairs = _as_pairs(dataset, image_size)
    if validation is not None:
        splits = {"train": pairs, "val": _as_pairs(validation, image_size)}
    elif validation_split:
        labels = np.fromiter(pairs.map(lambda x, y: y).as_numpy_iterator(), np.int64)
        held_out = _stratified_split(
            {c: list(np.flatnonzero(labels == c)) for c in np.unique(labels)},
            validation_split, seed).get("val", {})
        mask = np.zeros(len(labels), bool)
        mask[[i for ids in held_out.values() for i in ids]] = True
        in_val = tf.constant(mask)
        indexed = pairs.enumerate()
        splits = {"train": indexed.filter(lambda i, p: ~in_val[i]).map(lambda i, p: p),
                  "val": indexed.filter(lambda i, p: in_val[i]).map(lambda i, p: p)}
    else:
        splits = {"train": pairs}

    def make(split, training):
        if split not in splits:
            return None
        ds = splits[split]
        if cache is not None and cache is not False:
            ds = ds.cache(_cache_for(cache, split))
        return _batched(ds, 10_000, batch_size, seed, training)

    return DataSplits(make("train", True), make("val", False), list(class_names))


def tfds_dataset(name, image_size, *, split="train", validation=None, data_dir=None,
                 batch_size=32, validation_split=0.2, seed=1337, download=True,
                 cache=True):
    """Loads an image classification dataset from TensorFlow Datasets.

    Images are read as encoded bytes and decoded by `decode_image`, the
    decoder the export uses.

    Args:
        name: A TFDS name (`"tf_flowers"`, `"cats_vs_dogs"`), or a TFDS
            builder such as `tfds.folder_dataset.ImageFolder(path)`.
        image_size: `(height, width)`.
        split: The training split.
        validation: A validation split name; `None` holds out
            `validation_split` of `split` instead (stratified, seeded).
        data_dir: Where TFDS keeps its data (default: `~/tensorflow_datasets`).
        batch_size: Images per batch.
        validation_split: See `validation`.
        seed: Seeds the split and the shuffling.
        download: Download and prepare the dataset if it is not there.
        cache: As in `dataset_source`.

    Returns:
        `DataSplits`, with the names of the TFDS `label` feature.

    Example:
    >>> train, val, class_names = tfds_dataset("tf_flowers", (224, 224))
    """
    import tensorflow_datasets as tfds

    if isinstance(name, str):
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as error:
            raise TransferError(f"unknown TFDS dataset {name!r}: "
                                f"{str(error).splitlines()[0]}") from None
    else:
        builder = name
    image_key, label_key = _tfds_keys(builder)
    if download:
        try:
            builder.download_and_prepare()
        except Exception as error:  # noqa: BLE001 - download errors come in many types.
            raise TransferError(
                f"cannot download TFDS dataset {builder.name!r}: {error}. Without "
                "internet, prepare it elsewhere and pass its data_dir "
                "(--tfds-data-dir)") from None
    class_names = list(builder.info.features[label_key].names)

    def read(split_name):
        try:
            ds = builder.as_dataset(split=split_name, shuffle_files=False,
                                    decoders={image_key: tfds.decode.SkipDecoding()})
        except (ValueError, KeyError, AssertionError) as error:
            raise TransferError(f"TFDS dataset {builder.name!r} has no split "
                                f"{split_name!r}: {error}") from None
        return ds.map(lambda ex: (decode_image(ex[image_key], image_size),
                                  tf.cast(ex[label_key], tf.int32)),
                      num_parallel_calls=tf.data.AUTOTUNE)

    splits = dataset_source(read(split), image_size, class_names,
                            validation=read(validation) if validation else None,
                            batch_size=batch_size,
                            validation_split=0 if validation else validation_split,
                            seed=seed, cache=cache)
    key = f"tfds-{builder.name}-{builder.version}-{builder.data_dir}-{image_size}"
    for split_name, ds in (("train", splits.train), ("val", splits.validation)):
        if ds is not None:
            register_source(ds, f"{key}-{split}-{validation}-{validation_split}-{seed}-"
                                f"{split_name}")
    return splits


def load_data(source, image_size, **options):
    """Loads labelled images from any supported source.

    Args:
        source: One of
            * a folder of class subfolders (or `train/ val/ test/`);
            * a `.csv` file of `path,label` rows;
            * `"tfds:NAME"` or `"tfds:NAME:SPLIT"` (e.g. `"tfds:tf_flowers"`);
            * `"imagefolder:PATH"`: a TFDS `ImageFolder`
              (`PATH/<split>/<class>/<image>`);
            * an `(images, labels)` tuple of arrays;
            * a `tf.data.Dataset` of `(image, label)` (pass `class_names`).
        image_size: `(height, width)`.
        **options: Passed to the source's function (`image_folder`,
            `csv_file`, `tfds_dataset`, `numpy_arrays`, `dataset_source`).

    Returns:
        `DataSplits`, which unpacks as `(train, validation, class_names)`.

    Example:
    >>> train, val, class_names = load_data("tfds:tf_flowers", (224, 224))
    """
    image_size = tuple(image_size)
    if isinstance(source, tf.data.Dataset):
        if "class_names" not in options:
            raise TransferError("a tf.data.Dataset source needs class_names")
        return dataset_source(source, image_size, options.pop("class_names"), **options)
    if isinstance(source, tuple) and len(source) == 2:
        return numpy_arrays(*source, image_size, **options)
    source = str(source)
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


def class_counts(dataset, num_classes):
    """Counts the labels of a dataset of `(images, labels)` batches.

    Args:
        dataset: The dataset; one pass is made over it.
        num_classes: The number of classes.

    Returns:
        An int numpy array of `num_classes` counts.
    """
    counts = np.zeros(num_classes, np.int64)
    for labels in dataset.map(lambda x, y: y).as_numpy_iterator():
        counts += np.bincount(np.asarray(labels).reshape(-1), minlength=num_classes)
    return counts


def _tfds_keys(builder):
    features = builder.info.features
    supervised = builder.info.supervised_keys
    if supervised and len(supervised) == 2 and all(isinstance(k, str) for k in supervised):
        return supervised
    image = [k for k, f in features.items() if type(f).__name__ == "Image"]
    label = [k for k, f in features.items() if type(f).__name__ == "ClassLabel"]
    if not image or not label:
        raise TransferError(f"TFDS dataset {builder.name!r} has no image and class "
                            "label features")
    return image[0], label[0]


def _as_pairs(dataset, image_size):
    """Unbatches if needed; resizes to `image_size` and casts to uint8 RGB."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise TransferError(f"expected a dataset of (image, label) pairs, got {spec}")
    if spec[0].shape.rank == 4:
        dataset = dataset.unbatch()
    elif spec[0].shape.rank != 3:
        raise TransferError(f"expected images of rank 3 or batches of rank 4, got "
                            f"shape {spec[0].shape}")

    def prepare(image, label):
        return tf.cast(_fit_pixels(image, image_size), tf.uint8), tf.cast(label, tf.int32)

    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)


def _to_rgb(image):
    channels = image.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 4:
        return image[..., :3]
    if channels != 3:
        raise TransferError(f"images must have 1, 3 or 4 channels, got {channels}")
    return image


def _resize_array(image, image_size):
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise TransferError(f"each image must be (height, width, channels); got "
                            f"shape {image.shape}")
    return _fit_pixels(tf.convert_to_tensor(image), image_size).numpy().astype(np.uint8)


def _fit_pixels(image, image_size):
    """RGB float32 pixels at `image_size`, rounded to whole values in [0, 255]."""
    image = tf.cast(_to_rgb(image), tf.float32)
    if tuple(image.shape[-3:-1]) != tuple(image_size):
        # Already-fitted images (TFDS ones come from `decode_image`) skip this.
        image = tf.image.resize(image, image_size, antialias=True)
    return tf.clip_by_value(tf.round(image), 0.0, 255.0)


def _check_class_count(where, class_names):
    if len(class_names) < 2:
        found = f" ({', '.join(map(str, class_names))})" if class_names else ""
        raise TransferError(f"{where} has {len(class_names)} class(es){found}; a "
                            "classifier needs at least 2")


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


def _file_splits(split_files, class_names, image_size, batch_size, seed, cache, skipped):
    """`DataSplits` from `{split: {class_name: [path, ...]}}`."""

    def make(split, training):
        paths, labels = _flatten(split_files.get(split, {}), class_names)
        if not paths:
            return None
        return _file_dataset(paths, labels, image_size, batch_size, seed,
                             training=training, cache=_cache_for(cache, split))

    return DataSplits(make("train", True), make("val", False), class_names,
                      test=make("test", False), skipped=skipped)


def _file_dataset(paths, labels, image_size, batch_size, seed, *, training, cache):
    def load(path, label):
        image = decode_image(tf.io.read_file(path), image_size)
        return tf.cast(image, tf.uint8), label

    ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int32)))
    # The order is set by the pipeline's options (see `_batched`), so that
    # distribution can ask for a fixed one.
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if cache is not None:
        ds = ds.cache(cache)
    return register_source(_batched(ds, len(paths), batch_size, seed, training),
                           files_key(paths, labels, tuple(image_size)))


def _batched(ds, shuffle_buffer, batch_size, seed, training):
    """Shuffles (in training), batches, casts to float32 and prefetches."""
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    if training:
        # The order is shuffled anyway, so let fast images overtake slow
        # ones (a deterministic decode measured up to 2x slower on epoch 1).
        # `distribute.distribute_dataset` sets it back to a fixed order, so
        # that workers split the same sequence.
        options = tf.data.Options()
        options.deterministic = False
        ds = ds.with_options(options)
    return ds


def _log_skipped(report):
    if not report.skipped:
        return
    logger.warning("skipped %d unusable file(s) (%s):", len(report.skipped),
                   report.summary())
    for path, reason in sorted(report.skipped.items()):
        logger.warning("  %s: %s", path, reason)
