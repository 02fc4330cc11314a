"""Multi-label sources: a CSV of paths and label sets, and multi-hot arrays.

A multi-label CSV has a `path,labels` header; each row names an image and
its labels, separated by spaces (as fastai and Kaggle's Planet data write
them; `label_sep` sets another separator). A row with no label is allowed:
the image shows none of the labels. Its batches hold multi-hot float32
rows, one column per label, in the sorted order of the label names.

There is no folder layout for multi-label data here: a folder per label
would hold each photo several times, and a folder per label set hides
which labels are shared.
"""

import functools
import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tftransfer.data.check import DataReport, decode_once, log_skipped
from tftransfer.data.csv_rows import csv_rows
from tftransfer.data.loader import DataSplits, check_class_count, decoded_split
from tftransfer.defaults import DEFAULT_BATCH_SIZE
from tftransfer.errors import TransferError

logger = logging.getLogger("tftransfer")

#: The header's second column in a multi-label CSV (`path,label` is single-label).
LABELS_COLUMN = "labels"


def is_multi_label_csv(path: Union[str, Path]) -> bool:
    """Whether a CSV file's header is `path,labels`: a multi-label CSV.

    Args:
        path: The CSV file.

    Returns:
        `True` for a `labels` column (a `label` column, or none, is single-label).
    """
    rows = csv_rows(path)
    first = rows[0][1] if rows and rows[0][0] == 1 else []
    return len(first) >= 2 and first[1].strip().lower() == LABELS_COLUMN


def read_labels_csv(path: Union[str, Path], label_sep: str = " ") -> tuple:
    """Reads a multi-label CSV's rows.

    Args:
        path: The CSV file, with a `path,labels` header (or none).
            Relative paths are relative to its folder.
        label_sep: What separates the labels in a cell.

    Returns:
        `(paths, label_lists, label_names)`: the image paths (str), each
        one's labels (a list, maybe empty), and the sorted label names.
    """
    path = Path(path)
    if not label_sep:
        raise TransferError("label_sep (--label-sep) must not be empty")
    paths, label_lists = [], []
    for number, row in csv_rows(path):
        if number == 1 and len(row) > 1 and row[1].strip().lower() in ("label",
                                                                       LABELS_COLUMN):
            continue  # The header.
        if len(row) > 2 and label_sep != ",":
            raise TransferError(f"{path}:{number}: expected 'path,labels', got {row}; "
                                "quote a path that holds a comma")
        file = Path(row[0].strip())
        paths.append(str(file if file.is_absolute() else path.parent / file))
        # With a comma between labels, the CSV reader has split them already.
        cells = row[1:] if label_sep == "," else [row[1] if len(row) > 1 else ""]
        label_lists.append(sorted({label.strip() for cell in cells
                                   for label in cell.split(label_sep) if label.strip()}))
    names = sorted({label for labels in label_lists for label in labels})
    check_class_count(path, names)
    return paths, label_lists, names


def multi_label_csv(path: Union[str, Path], image_size: Sequence[int], *,
                    label_sep: str = " ", batch_size: int = DEFAULT_BATCH_SIZE,
                    validation_split: float = 0.2, seed: int = 1337,
                    image_cache: Union[bool, str, Path] = True) -> DataSplits:
    """Reads the images of a multi-label CSV into train and validation datasets.

    Every file is checked first, as in `image_folder`; unusable ones are
    skipped, counted and named. The validation images are a seeded random
    share of the rows. The log gives the images of each label, and those
    with none.

    Args:
        path: The CSV file (`path,labels` header).
        image_size: `(height, width)`.
        label_sep: What separates the labels in a cell.
        batch_size: Images per batch.
        validation_split: The fraction of the images held out; 0 for none.
        seed: Seeds the split and the shuffling.
        image_cache: As in `image_folder`.

    Returns:
        `DataSplits` of `(images, multi-hot labels)` batches; `class_names`
        are the label names.
    """
    paths, hot, names, decoded = _decoded_rows(path, image_size, label_sep, image_cache)
    usable = np.flatnonzero(decoded.usable)
    parts = random_split(len(usable), validation_split, seed)
    train = usable[parts["train"]["all"]]
    val = usable[parts["val"]["all"]] if "val" in parts else []
    absent = [n for n, count in zip(names, hot[train].sum(axis=0)) if not count]
    if absent:
        raise TransferError(f"{path}: no usable training image has the label(s) "
                            f"{', '.join(absent)}")
    _log_counts(names, hot[usable])
    return DataSplits(_split(decoded, paths, hot, train, batch_size, seed, True), _split(
        decoded, paths, hot, val, batch_size, seed, False) if len(val) else None, names,
        skipped=decoded.skipped)


def multi_label_evaluation(path: Union[str, Path], image_size: Sequence[int], *,
                           label_sep: str = " ", batch_size: int = DEFAULT_BATCH_SIZE,
                           image_cache: Union[bool, str, Path] = True) -> tuple:
    """Reads every usable image of a multi-label CSV, unshuffled, to evaluate on.

    Args:
        path, image_size, label_sep, batch_size, image_cache: As in
            `multi_label_csv`.

    Returns:
        `(dataset, label_names, skipped)`; `data.loader.source_files` names
        the file of each example; `skipped` is `{path: reason}` of every
        file that could not be used.
    """
    paths, hot, names, decoded = _decoded_rows(path, image_size, label_sep, image_cache)
    rows = np.flatnonzero(decoded.usable)
    _log_counts(names, hot[rows])
    return (_split(decoded, paths, hot, rows, batch_size, 0, False), names,
            dict(decoded.skipped))


def _decoded_rows(path, image_size, label_sep, image_cache):
    paths, label_lists, names = read_labels_csv(path, label_sep)
    hot = multi_hot(label_lists, names)
    # The labels live in `hot`, looked up by index: the decoded pixels need none.
    decoded = decode_once(paths, np.zeros(len(paths), np.int32), tuple(image_size),
                          cache=image_cache)
    log_skipped(DataReport(len(paths), {}, decoded.skipped, [], names))
    if not decoded.usable.any():
        raise TransferError(f"no usable image in {path}")
    return paths, hot, names, decoded


def _log_counts(names, hot):
    counts = ", ".join(f"{name} {int(c)}" for name, c in zip(names, hot.sum(axis=0)))
    logger.info("multi-label data: %d image(s); per label: %s; %d with no label",
                len(hot), counts, int((hot.sum(axis=1) == 0).sum()))


def _split(decoded, paths, hot, indices, batch_size, seed, training):
    """`(images, multi-hot labels)` batches of the decoded files at `indices`."""
    return decoded_split(decoded, paths, indices, batch_size, seed, training,
                         pair=functools.partial(_with_labels, tf.constant(hot)))


def _with_labels(hot, pixels, label, index):
    return pixels, tf.gather(hot, index)


def multi_hot_labels(labels: np.ndarray, class_names: Optional[Sequence[str]]) -> tuple:
    """Checks multi-hot label rows held in memory.

    Args:
        labels: A `(N, labels)` array of 0 and 1.
        class_names: The label names, or `None` for `"0"`, `"1"`, ...

    Returns:
        `(labels as float32, label names)`.
    """
    hot = np.asarray(labels, np.float32)
    if not np.isin(hot, (0.0, 1.0)).all():
        raise TransferError("multi-hot labels must be 0 or 1")
    names = [str(n) for n in class_names] if class_names is not None else [
        str(i) for i in range(hot.shape[1])]
    if len(names) != hot.shape[1]:
        raise TransferError(f"{len(names)} class names for {hot.shape[1]} label columns")
    check_class_count("the labels", names)
    _log_counts(names, hot)
    return hot, names


def random_split(rows: int, validation_split: float, seed: int) -> dict:
    """A seeded random split of `rows` examples, for labels that cannot stratify it.

    Args:
        rows: The number of examples.
        validation_split: The fraction held out, in `[0, 1)`.
        seed: Seeds the split.

    Returns:
        `{"train": {"all": [index, ...]}}`, with `"val"` beside it when
        any are held out (the form of `loader.stratified_split`).
    """
    if not 0 <= validation_split < 1:
        raise TransferError(f"validation_split must be in [0, 1), got {validation_split}")
    order = np.random.default_rng(seed).permutation(rows)
    held = int(round(rows * validation_split))
    splits = {"train": {"all": sorted(order[held:].tolist())}}
    if held:
        splits["val"] = {"all": sorted(order[:held].tolist())}
    return splits


def multi_hot(label_lists: Sequence[Sequence[str]], names: Sequence[str]) -> np.ndarray:
    """Encodes lists of label names as multi-hot rows.

    Args:
        label_lists: The labels of each example (an empty list for none).
        names: Every label name, in output order.

    Returns:
        A float32 array `[examples, len(names)]` of 0 and 1.

    Example:
    >>> multi_hot([["cat"], ["cat", "dog"], []], ["cat", "dog"]).tolist()
    [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    """
    index = {name: i for i, name in enumerate(names)}
    rows = np.zeros((len(label_lists), len(names)), np.float32)
    for row, labels in enumerate(label_lists):
        for label in labels:
            if label not in index:
                raise TransferError(f"unknown label {label!r}; the labels are "
                                    f"{', '.join(names)}")
            rows[row, index[label]] = 1.0
    return rows
