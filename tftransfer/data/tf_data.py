"""Sources that are already `tf.data`: a `tf.data.Dataset`, and TFDS datasets.

Their images are resized once to the target size and cached like the
files of a folder; a source of unknown length is counted, because Keras
and learning-rate schedules need the number of steps.
"""

import functools

import numpy as np
import tensorflow as tf

from tftransfer.data import cache as data_cache
from tftransfer.data.decode import check_channels, decode_image, fit_pixels
from tftransfer.data.loader import (DataSplits, batched, check_class_count,
                                    stratified_split)
from tftransfer.data.multi_hot import random_split
from tftransfer.defaults import DEFAULT_BATCH_SIZE
from tftransfer.errors import TransferError


def dataset_source(dataset, image_size, class_names, *, validation=None,
                   batch_size=DEFAULT_BATCH_SIZE, validation_split=0.0, seed=1337,
                   image_cache=True):
    """Adapts an existing `tf.data.Dataset` of `(image, label)` pairs.

    Images of any size (batched or not, uint8 or float in `[0, 255]`, one,
    three or four channels) are resized once to `image_size`.

    Args:
        dataset: Unbatched `(image, label)` pairs, or batches of them. A
            label that is a vector is a multi-hot row (multi-label data).
        image_size: `(height, width)`.
        class_names: The class names, in label order.
        validation: A dataset like `dataset` for validation, or `None`.
        batch_size: Images per batch.
        validation_split: Without `validation`, the fraction of each class
            held out (stratified, seeded; costs one pass over the labels).
        seed: Seeds the split and the shuffling.
        image_cache: Cache the resized images in memory (`True`; in
            `default_image_cache_dir()` if a dataset of known length would
            take more than half of the available memory), in a folder
            (files named by a digest of the dataset's graph, which holds
            arrays and file names; a dataset made by Python code is cached
            in memory instead), or not at all (`False`).

    Returns:
        `DataSplits`.
    """
    check_class_count("class_names", list(class_names))

    def cached(ds, name):
        where = image_cache
        if where is True and ds.cardinality() >= 0:
            where = data_cache.memory_or_folder(
                int(ds.cardinality()) * image_size[0] * image_size[1] * 3)
        if where is None or where is False:
            return ds
        entry = data_cache.dataset_cache_entry(ds, where, name)
        return data_cache.cache_dataset_in_folder(ds, entry) if entry else ds.cache()

    pairs = _as_pairs(dataset, image_size, "training")
    if validation is not None:
        splits = {"train": cached(pairs, "train"),
                  "val": cached(_as_pairs(validation, image_size, "validation"), "val")}
    elif validation_split:
        # Cached before the pass over the labels, which then fills the cache.
        pairs = cached(pairs, "all")
        labels = np.stack(list(pairs.map(lambda x, y: y).as_numpy_iterator()))
        if labels.ndim == 2:
            held_out = random_split(len(labels), validation_split, seed).get("val", {})
        else:
            held_out = stratified_split(
                {c: list(np.flatnonzero(labels == c)) for c in np.unique(labels)},
                validation_split, seed).get("val", {})
        mask = np.zeros(len(labels), bool)
        mask[[i for ids in held_out.values() for i in ids]] = True
        indexed = pairs.enumerate()
        # The filter hides the lengths, which learning-rate schedules need.
        splits = {name: indexed.filter(functools.partial(_in_split, tf.constant(wanted)))
                  .map(_without_index)
                  .apply(tf.data.experimental.assert_cardinality(int(wanted.sum())))
                  for name, wanted in (("train", ~mask), ("val", mask))}
    else:
        splits = {"train": cached(pairs, "train")}

    def make(split, training):
        if split not in splits:
            return None
        ds = data_cache.with_known_length(splits[split], split)
        return batched(ds, 10_000, batch_size, seed, training)

    return DataSplits(make("train", True), make("val", False), list(class_names))


def _in_split(wanted, index, pair):
    return tf.gather(wanted, index)


def _without_index(index, pair):
    return pair


def tfds_dataset(name, image_size, *, split="train", validation=None, data_dir=None,
                 batch_size=DEFAULT_BATCH_SIZE, validation_split=0.2, seed=1337, download=True,
                 image_cache=True):
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
        image_cache: As in `dataset_source`.

    Returns:
        `DataSplits`, with the names of the TFDS `label` feature.
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
                            seed=seed, image_cache=image_cache)
    return splits


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


def _as_pairs(dataset, image_size, split):
    """Unbatches if needed; resizes to `image_size` and casts to uint8 RGB."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise TransferError(f"expected a dataset of (image, label) pairs, got {spec}")
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise TransferError(f"the {split} dataset repeats forever; pass it without "
                            ".repeat() (each epoch is one pass)")
    if spec[0].shape.rank in (3, 4) and spec[0].shape[-1] is not None:
        check_channels(spec[0].shape[-1])
    if spec[0].shape.rank == 4:
        dataset = dataset.unbatch()
    elif spec[0].shape.rank != 3:
        raise TransferError(f"expected images of rank 3 or batches of rank 4, got "
                            f"shape {spec[0].shape}")

    label_spec = dataset.element_spec[1]
    # A vector per image is a multi-hot row of labels that are not exclusive.
    multi = label_spec.shape.rank == 1 and label_spec.shape[0] != 1

    def prepare(image, label):
        return fit_pixels(image, image_size), tf.cast(label, tf.float32 if multi else tf.int32)

    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
