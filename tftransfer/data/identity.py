"""What a dataset holds, read from its content: the key of its cached features, its counts.

The feature cache keeps a base's output for a dataset across runs, so it
needs a name for the dataset's content that changes whenever the content
does, whoever built the pipeline: a tftransfer loader, the user's own
`tf.data` code, or either after `.map()` or `.prefetch()`. `identify`
reads one pass of the batches and fingerprints every example (its pixels
and its label) with `tf.fingerprint`. The fingerprints are sorted before
they are combined, so a shuffled training set has the same key in every
epoch and every run, while a changed, added or removed example, or a
relabelled one, gives another key. The same pass counts the labels, which
the `"auto"` settings and the class weights read.

A pipeline with random operations (augmentation inside it, say) has new
content at every pass, so its key changes every run and its entries are
never reused: tftransfer's own augmentation runs inside the model, after
the cache, for that reason.

The splits that tftransfer's loaders make from image files carry their
identity already (`register_identity`), so `identify` answers them without
a read: their key names every file by path, size and modification time
(in nanoseconds), its label, the decoded size and the decoder's version,
so a changed, added, removed or relabelled file changes it, as a read would.
"""

import dataclasses
import hashlib
import weakref
from typing import Optional

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class DataIdentity:
    """The content of a dataset of `(images, labels)` batches, as `identify` read it.

    Attributes:
        key: A hex digest of every example's pixels and label, independent
            of their order; `None` where the dataset could not be read as
            pairs of known shape.
        rows: The number of examples.
        counts: The examples of each label, or `None` without `num_classes`.
            With multi-hot labels, the examples that carry each label.
        why_no_key: Why there is no key, for the log, or `None`.
        unlabelled: With multi-hot labels, the examples that carry none;
            else `None`.
    """

    key: Optional[str]
    rows: int
    counts: Optional[tuple] = None
    why_no_key: Optional[str] = None
    unlabelled: Optional[int] = None

    @property
    def multi_label(self) -> bool:
        """Whether the labels are multi-hot rows."""
        return self.unlabelled is not None


def identify(dataset: tf.data.Dataset, num_classes: Optional[int] = None) -> DataIdentity:
    """Reads a dataset once and returns the key of its content, its size and counts.

    Args:
        dataset: A finite `tf.data.Dataset` of `(images, labels)` batches
            with integer labels, or multi-hot rows of labels.
        num_classes: The number of classes, to count the labels; `None`
            leaves `counts` out.

    Returns:
        A `DataIdentity`.
    """
    known = _known(dataset)
    if known is not None and (num_classes is None or known.counts is not None
                              and len(known.counts) == num_classes):
        return known if num_classes else dataclasses.replace(known, counts=None)
    why = _why_unreadable(dataset)
    if why is not None:
        return DataIdentity(None, 0, None, why)
    multi_hot = dataset.element_spec[1].shape.rank == 2 and \
        dataset.element_spec[1].shape[-1] != 1
    rows, prints, counts = 0, [], np.zeros(num_classes or 0, np.int64)
    unlabelled = 0 if multi_hot else None
    for labels, digest in dataset.map(_fingerprint_batch).as_numpy_iterator():
        rows += len(labels)
        prints.append(digest)
        if multi_hot:
            present = np.asarray(labels) > 0.5
            unlabelled += int((~present.any(axis=1)).sum())
            if num_classes:
                counts += present.sum(axis=0).astype(np.int64)[:num_classes]
        elif num_classes:
            counts += np.bincount(np.asarray(labels).reshape(-1).astype(np.int64),
                                  minlength=num_classes)[:num_classes]
    combined = hashlib.sha256(_FORMAT)
    if prints:
        combined.update(np.sort(np.concatenate(prints)).tobytes())
    return DataIdentity(combined.hexdigest(), rows,
                        tuple(int(c) for c in counts) if num_classes else None,
                        unlabelled=unlabelled)


def register_identity(dataset: tf.data.Dataset, identity: DataIdentity) -> tf.data.Dataset:
    """Records what a loader knows of a dataset's content, so `identify` need not read it.

    Args:
        dataset: The batches, as the loader returns them.
        identity: Their `DataIdentity`, with `counts` of every class.

    Returns:
        `dataset`.
    """
    _IDENTITIES[dataset] = identity
    return dataset


def _known(dataset):
    try:
        return _IDENTITIES.get(dataset)
    except TypeError:  # Not hashable, so never registered.
        return None


# Datasets are keys by identity, and go with their dataset.
_IDENTITIES = weakref.WeakKeyDictionary()
# Part of every key: changed whenever the fingerprint's recipe changes.
_FORMAT = b"tftransfer-identity-1"


def _why_unreadable(dataset):
    spec = getattr(dataset, "element_spec", None)
    if not isinstance(spec, tuple) or len(spec) != 2:
        return "the data is not a tf.data.Dataset of (images, labels)"
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        return "the data repeats forever"
    return None


def _fingerprint_batch(images, labels):
    """One 64-bit fingerprint per example, of its pixels, their shape and its label.

    Pixels count by value as float32, as the model reads them, whatever
    their dtype in the pipeline; the shape comes from the tensor, not the
    pipeline's static spec, which a `py_function` map leaves unknown.
    """
    rows = tf.shape(labels)[0]
    pixels = tf.fingerprint(tf.reshape(tf.bitcast(tf.cast(images, tf.float32), tf.int32),
                                       (rows, -1)))
    label = tf.fingerprint(tf.reshape(tf.cast(labels, tf.int64), (rows, -1)))
    shape = tf.bitcast(tf.cast(tf.shape(images)[1:], tf.int64), tf.uint8)
    shape = tf.tile(tf.reshape(shape, (1, -1)), tf.stack([rows, 1]))
    both = tf.fingerprint(tf.concat([pixels, label, shape], axis=1))
    return labels, tf.bitcast(both, tf.uint64)
