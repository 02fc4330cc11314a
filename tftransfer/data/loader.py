"""From kept pixels to batches: the splits, shuffling and batching.

Every source ends here: `DataSplits` of `(images, labels)` batches of
float32 RGB pixels in `[0, 255]`. What a dataset holds, for the feature
cache, is read from its content (`data.identity`), not recorded here.
"""

import dataclasses
import functools
import hashlib
import weakref
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from tftransfer.data.decode import DECODER_VERSION
from tftransfer.data.identity import DataIdentity, identify, register_identity
from tftransfer.errors import TransferError



# Dataset -> the file of each example, for the reports (see `source_files`).
_SOURCE_FILES = weakref.WeakKeyDictionary()


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

    @property
    def multi_label(self) -> bool:
        """Whether the labels are multi-hot rows (labels that are not exclusive)."""
        spec = self.train.element_spec[1]
        return spec.shape.rank == 2 and spec.shape[-1] != 1

    def identities(self) -> dict:
        """`{split: DataIdentity}` of each split present, read once each (`identify`).

        The data check's counts of a source that is not a folder.
        """
        splits = (("train", self.train), ("validation", self.validation), ("test", self.test))
        return {name: identify(batches, len(self.class_names))
                for name, batches in splits if batches is not None}

    def held_out(self):
        """Returns `(name, batches)` to score on: the test split, else validation.

        `("validation", None)` when there is neither.
        """
        if self.test is not None:
            return "test", self.test
        return "validation", self.validation


def register_files(dataset, files):
    """Records the file of each example of an unshuffled dataset, for the reports.

    Args:
        dataset: A `tf.data.Dataset`.
        files: The file of each example, in the dataset's order.

    Returns:
        `dataset`.
    """
    _SOURCE_FILES[dataset] = [str(f) for f in files]
    return dataset


def source_files(dataset):
    """Returns the file of each example that `register_files` recorded, or `None`.

    Evaluation reports name the images they show by these paths.
    """
    try:
        return _SOURCE_FILES.get(dataset)
    except TypeError:
        return None


def files_identity(decoded, paths, labels, num_classes):
    """The `DataIdentity` of decoded files, from their names, sizes and times, not a read.

    Args:
        decoded: The `Decoded` pass the files come from (its pixels' shape
            is part of the key).
        paths: The files, in any order.
        labels: Each file's class index.
        num_classes: The number of classes, for the counts.

    Returns:
        A `DataIdentity` whose key changes with any file's path, size,
        modification time or label, with the decoded size and the decoder.
    """
    order = np.argsort([str(p) for p in paths], kind="stable")
    shape = tuple(decoded.source.element_spec[0].shape) if decoded.source is not None else ()
    key = files_key([paths[i] for i in order], [labels[i] for i in order], shape,
                    DECODER_VERSION)
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    return DataIdentity(key, len(paths), tuple(int(c) for c in counts))


def files_key(paths, labels, *extra):
    """Returns a key naming files by path, size and mtime, with their labels."""
    digest = hashlib.sha256(repr(extra).encode())
    for path, label in zip(paths, labels):
        stat = Path(path).stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{label}\n".encode())
    return "files-" + digest.hexdigest()


def check_class_names(class_names, where):
    """Refuses class names that labels files and reports cannot hold.

    A newline in a name would shift every label after it in `labels.txt`,
    and other control characters garble terminals and pages.

    Args:
        class_names: The names.
        where: What they come from, for the error.

    Raises:
        TransferError: A name with a control character, or with bytes that
            are not UTF-8, named with them escaped.
    """
    for name in map(str, class_names):
        try:
            name.encode("utf-8")
            bad = any(ord(c) < 32 or ord(c) == 127 for c in name)
        except UnicodeEncodeError:
            bad = True
        if bad:
            shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise TransferError(f"{where}: the class name {shown!r} holds a control "
                                "character or bytes that are not UTF-8; rename it")


def check_class_count(where, class_names):
    check_class_names(class_names, where)
    if len(class_names) < 2:
        found = f" ({', '.join(map(str, class_names))})" if class_names else ""
        raise TransferError(f"{where} has {len(class_names)} class(es){found}; a "
                            "classifier needs at least 2")


def stratified_split(files, validation_split, seed):
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


def file_splits(decoded, paths, split_files, class_names, batch_size, seed, skipped):
    """`DataSplits` of the files that `decode_once` passed.

    Args:
        decoded: The `Decoded` pass over `paths`.
        paths: The paths that its indices number.
        split_files: `{split: {class_name: [index, ...]}}`.
    """

    def make(split, training):
        chosen = split_files.get(split, {})
        indices = [i for name in class_names for i in chosen.get(name, [])]
        if not indices:
            return None
        labels = [label for label, name in enumerate(class_names) for _ in chosen.get(name, [])]
        return register_identity(
            decoded_split(decoded, paths, indices, batch_size, seed, training),
            files_identity(decoded, [paths[i] for i in indices], labels, len(class_names)))

    return DataSplits(make("train", True), make("val", False), class_names,
                      test=make("test", False), skipped=skipped)


def decoded_split(decoded, paths, indices, batch_size, seed, training,
                  pair=None):
    """Batches of the files at `indices` among those that `decode_once` passed.

    Args:
        decoded: The `Decoded` pass over `paths`.
        paths: The paths that its indices number.
        indices: The files of this split.
        batch_size, seed, training: As in `batched`.
        pair: `(pixels, label, index) -> (pixels, label)`; by default the
            decoded label.

    Returns:
        The batches; unless `training`, with `source_files` naming each
        example's file.
    """
    wanted = np.zeros(len(paths), bool)
    wanted[indices] = True
    ds = decoded.source
    if len(indices) < int(decoded.usable.sum()):
        ds = ds.filter(functools.partial(_is_wanted, tf.constant(wanted)))
    # Skipping failed files (and filtering) hides the length, which
    # progress bars and learning-rate schedules need.
    ds = ds.map(pair or _pixels_and_label).apply(
        tf.data.experimental.assert_cardinality(len(indices)))
    ds = batched(ds, len(indices), batch_size, seed, training)
    # The filter keeps the source's order (grouped by decoder); only the
    # training split is shuffled.
    return ds if training else register_files(
        ds, [paths[i] for i in decoded.order if wanted[i]])


def _is_wanted(wanted, pixels, label, index):
    return tf.gather(wanted, index)


def _pixels_and_label(pixels, label, index):
    return pixels, label


def batched(ds, shuffle_buffer, batch_size, seed, training):
    """Shuffles (in training), batches, casts to float32 and prefetches."""
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    if training:
        # The order is shuffled anyway, so let fast images overtake slow
        # ones. `multi_worker.distribute_dataset` sets it back to a fixed
        # order, so that workers split the same sequence.
        options = tf.data.Options()
        options.deterministic = False
        ds = ds.with_options(options)
    return ds
