"""Feature cache: run the frozen base once, train the head on its output.

While the base is frozen, every epoch of phase 1 pushes the same images
through the same base and gets the same features. `cached_features` runs
the base once, streams the features to disk in `.npy` shards, and returns a
dataset of `(features, labels)` batches that the head alone trains on, in a
fraction of the time.

A cache entry is a folder named by a fingerprint of everything that
determines its content: the base's weights and configuration (preprocessing
and input size included), the data's content (every example's pixels and
label, `data.identify`), and the augmentation views. Any change gives
a new fingerprint, so a stale entry is never read. An entry is written in a
`.partial-*` folder and renamed into place only once its manifest is
written, so an extraction killed half-way is never used.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import time
import weakref
from pathlib import Path
from typing import NamedTuple, Optional, Union

import keras
import numpy as np
import tensorflow as tf

from tftransfer import _atomic, _locks
from tftransfer.data.cache import memory_short_of
from tftransfer.data.identity import identify
from tftransfer.errors import TransferError
from tftransfer.progress import Progress
from tftransfer.training.distribute import is_multi_worker

logger = logging.getLogger("tftransfer")


MANIFEST = "manifest.json"
# Part of every fingerprint: bumped when the entries' layout changes.
_FORMAT = 2
_ENTRY_NAME = re.compile(r"[0-9a-f]{64}(\.partial-.*)?")
# Rows per shard are chosen so that a shard holds about this many bytes.
_SHARD_BYTES = 64 * 2**20


def default_cache_dir():
    """Returns `$TFTRANSFER_CACHE_DIR`, else `~/.cache/tftransfer/features`."""
    return Path(os.environ.get("TFTRANSFER_CACHE_DIR")
                or Path.home() / ".cache" / "tftransfer" / "features")


def fingerprint(features, data_key, *, augmentation=None, views=1):
    """Returns the cache key of a base applied to a data source.

    Args:
        features: The base's `"features"` model.
        data_key: A string that identifies the data (`DataIdentity.key`).
        augmentation: The random augmentation model applied before the base,
            or `None`.
        views: Augmented views per image.

    Returns:
        A hex string.
    """
    digest = hashlib.sha256()
    for model in (features, augmentation):
        if model is None:
            continue
        digest.update(_config_text(model).encode())
        for weight in model.weights:
            if "seed_generator" in weight.path:
                continue  # Random layers' seed state: their views are random anyway.
            digest.update(weight.path.encode())
            digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)))
    digest.update(f"{data_key}|views={views}|format={_FORMAT}".encode())
    return digest.hexdigest()


def cached_features(features, dataset, *, identity=None, cache_dir=None, augmentation=None,
                    views=1, batch_size=None, shuffle=False, seed=None):
    """Returns a dataset of the base's features, extracting them only once.

    Args:
        features: The frozen model to run: a classifier's `"features"`
            model, or the frozen bottom of its base (`boundary.split_at`),
            whose outputs may be several tensors.
        dataset: `(images, labels)` batches.
        identity: The dataset's `data.DataIdentity`, whose key names its
            content in the entry's fingerprint (default: `data.identify`
            reads the dataset once for it).
        cache_dir: The cache's root folder (default: `default_cache_dir()`).
        augmentation: A model of random augmentation layers; each of the
            `views` passes applies it once per image.
        views: Augmented views per image (1 without augmentation).
        batch_size: Batch size of the returned dataset (default: that of
            `dataset`).
        shuffle: Shuffle the rows every epoch.
        seed: Seeds the shuffling.

    Returns:
        `(dataset, manifest)`: `(features, labels)` batches, and the
        entry's manifest (a dict with `rows`, `shapes` (of each output's
        rows), `shards`, `path` and `reused`).
    """
    identity = identity or identify(dataset)
    if identity.key is None:
        raise TransferError(f"cannot cache the features: {identity.why_no_key}")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    entry = root / fingerprint(features, identity.key, augmentation=augmentation, views=views)
    manifest = read_manifest(entry)
    if manifest is None:
        manifest = extract_features(features, dataset, entry, augmentation=augmentation,
                                    views=views, rows=identity.rows)
        manifest["reused"] = False
    else:
        logger.info("feature cache: reusing %s (%d rows)", entry, manifest["rows"])
        manifest["reused"] = True
    manifest["path"] = str(entry)
    return load_features(entry, manifest, batch_size or manifest["batch_size"],
                         shuffle=shuffle, seed=seed), manifest


def extract_features(features, dataset, entry, *, augmentation=None, views=1, rows=None):
    """Runs the base over a dataset and writes its features to a cache entry.

    The shards go to a partial folder beside `entry`, which is renamed to
    `entry` after the manifest is written (`_atomic.publish_folder`).

    Args:
        features: The `"features"` model.
        dataset: `(images, labels)` batches.
        entry: The entry's folder.
        augmentation: Random augmentation applied before the base, or `None`.
        views: Passes over the data (each with fresh augmentation).
        rows: The examples in `dataset`, if known, for the progress bar.

    Returns:
        The manifest dict.
    """
    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(entry)
    logger.info("feature cache: extracting features to %s", entry)
    strategy = getattr(features, "distribute_strategy", None) or tf.distribute.get_strategy()
    extract = _extractor(features, augmentation, strategy, dataset.element_spec)
    manifest = {}

    progress = Progress(None if rows is None else rows * views, "images")
    start = time.perf_counter()

    def write(staging):
        writer = _ShardWriter(staging)
        batch_size = None
        for _ in range(views):
            for batch in _distribute(dataset, strategy):
                outputs, labels = extract(batch)
                batch_size = batch_size or int(labels.shape[0])
                writer.add([o.numpy() for o in tf.nest.flatten(outputs)], labels.numpy())
                progress.add(labels.shape[0])
        manifest.update(writer.close(batch_size=batch_size or 1, views=views))
        logger.info("feature cache: %d row(s) extracted in %.1f s", manifest["rows"],
                    time.perf_counter() - start)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))

    # Losing a race to another process is fine: its entry is as good.
    _atomic.publish_folder(entry, write)
    return manifest


def _extractor(features, augmentation, strategy, spec):
    """Returns a compiled `(images, labels) -> (features, labels)` step."""
    spec = _any_batch_size(spec)
    key = (id(augmentation), id(strategy), repr(spec))
    steps = _EXTRACTORS.setdefault(features, {})
    if key not in steps:
        steps[key] = _compile_extractor(features, augmentation, strategy, spec)
    return steps[key]


def _any_batch_size(spec):
    """`spec` with a batch size of `None`, or `None` if a shape's rank is unknown."""
    try:
        return tf.nest.map_structure(
            lambda s: tf.TensorSpec((None, *s.shape[1:]), s.dtype), spec)
    except (AttributeError, TypeError, ValueError):
        return None


# One compiled step per features model, so repeated extractions reuse it.
_EXTRACTORS = weakref.WeakKeyDictionary()


def _compile_extractor(features, augmentation, strategy, spec):

    def step(images, labels):
        if augmentation is not None:
            images = augmentation(images, training=True)
        return features(images, training=False), labels

    if not _split_across_replicas(strategy):
        if spec is None:
            return tf.function(lambda batch: step(*batch), reduce_retracing=True)
        # Traced once for any batch size: a last, smaller batch would
        # otherwise trace the whole base a second time.
        return tf.function(lambda batch: step(*batch), input_signature=[spec])

    @tf.function
    def distributed(batch):
        outputs = strategy.run(step, args=batch)
        return tf.nest.map_structure(lambda t: strategy.gather(t, axis=0), outputs)

    return distributed


def _distribute(dataset, strategy):
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise TransferError("the feature cache needs a dataset of (images, labels) "
                            f"batches; got elements {spec}")
    if not _split_across_replicas(strategy):
        return dataset
    return strategy.experimental_distribute_dataset(dataset)


def _split_across_replicas(strategy):
    # Workers extract on their own: each may find an entry that another is
    # still writing, and a collective `gather` would then wait forever.
    return strategy.num_replicas_in_sync > 1 and not is_multi_worker(strategy)


def read_manifest(entry):
    """Returns a complete entry's manifest, or `None` if it is absent or partial."""
    try:
        manifest = json.loads((Path(entry) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    shards = [Path(entry) / name for pair in manifest.get("shards", []) for name in pair]
    if not all(p.is_file() for p in shards):
        return None
    return manifest


def load_features(entry, manifest, batch_size, *, shuffle=False, seed=None):
    """Reads a cache entry as a dataset of `(features, labels)` batches.

    `features` is one tensor, or a tuple of them for an entry of several
    outputs (the activations that cross a cut through the base). Entries
    that take less than half of the available memory are read into memory
    once, so that an epoch costs what the layers that train cost; larger
    ones stream from their shards (memory-mapped), one shard at a time.
    """
    return joined_features([{**manifest, "path": str(entry)}], batch_size, shuffle=shuffle,
                           seed=seed)


def joined_features(manifests, batch_size, *, shuffle=False, seed=None):
    """Reads several cache entries of the same model as one dataset.

    Used to train on the training and validation entries together (the
    refit of `fine_tune`); rows of all entries are shuffled together.

    Args:
        manifests: The entries' manifests, as `cached_features` returns
            them (with their `path`).
        batch_size: Rows per batch.
        shuffle: Shuffle the rows every epoch.
        seed: Seeds the shuffling.

    Returns:
        A dataset of `(features, labels)` batches, as `load_features`.
    """
    shapes = [tuple(shape) for shape in manifests[0]["shapes"]]
    if any([tuple(s) for s in m["shapes"]] != shapes for m in manifests):
        raise TransferError("cannot join feature cache entries of different shapes: "
                            f"{[m['shapes'] for m in manifests]}")
    shards = [[str(Path(m["path"]) / name) for name in names]
              for m in manifests for names in m["shards"]]
    rows = sum(m["rows"] for m in manifests)
    row_bytes = 4 * sum(int(np.prod(shape)) for shape in shapes)
    locks = []
    if memory_short_of(rows * row_bytes) is None:
        arrays = [np.concatenate([np.load(shard[part]) for shard in shards])
                  for part in range(len(shapes) + 1)]
        ds = tf.data.Dataset.from_tensor_slices((_packed(arrays[:-1]), arrays[-1]))
        buffer = rows
    else:
        order = np.random.default_rng(seed)

        def generate():
            indices = order.permutation(len(shards)) if shuffle else range(len(shards))
            for index in indices:
                *parts, labels = shards[index]
                yield (_packed([np.load(part, mmap_mode="r")[:] for part in parts]),
                       np.load(labels))

        locks = [_locks.try_lock(Path(m["path"]) / MANIFEST, shared=True) for m in manifests]
        spec = entry_spec(shapes, manifests[0]["label_dtype"],
                          manifests[0].get("label_shape", ()))
        ds = tf.data.Dataset.from_generator(generate, output_signature=spec).unbatch()
        buffer = min(rows, 50_000)
    if shuffle:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    batches = -(-rows // batch_size)
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    if locks:  # Held while the dataset lives, so that clear-cache skips these entries.
        weakref.finalize(ds, lambda: [_locks.release(lock) for lock in locks])
    return ds


def read_rows(manifest: dict, rows: Optional[int] = None) -> tuple:
    """Reads a single-output cache entry's rows into memory, in the order written.

    Args:
        manifest: The entry's manifest, as `cached_features` returns it
            (with its `path`).
        rows: Read only the first this many rows (e.g. one view's).

    Returns:
        `(features, labels)` as numpy arrays.
    """
    features, labels, total = [], [], 0
    for *parts, label_file in manifest["shards"]:
        if rows is not None and total >= rows:
            break
        if len(parts) != 1:
            raise TransferError("read_rows reads entries of one output, not a cut's")
        features.append(np.load(Path(manifest["path"]) / parts[0]))
        labels.append(np.load(Path(manifest["path"]) / label_file))
        total += len(labels[-1])
    return np.concatenate(features)[:rows], np.concatenate(labels)[:rows]


def entry_spec(shapes, label_dtype, label_shape=()):
    """The element spec of a cache entry's batches, as `load_features` reads them.

    Args:
        shapes: The shape of each output's rows (a manifest's `shapes`).
        label_dtype: The labels' dtype.
        label_shape: The shape of each label (scalars by default).

    Returns:
        `(features, labels)` specs with a batch size of `None`; features of
        several outputs are a tuple, and every feature is float32, as the
        entries store them.
    """
    return (_packed([tf.TensorSpec((None, *shape), tf.float32) for shape in shapes]),
            tf.TensorSpec((None, *label_shape), label_dtype))


def _packed(parts):
    return parts[0] if len(parts) == 1 else tuple(parts)


class ClearedCache(NamedTuple):
    """What `clear_feature_cache` did.

    Attributes:
        deleted: The entries deleted.
        in_use: Entries left alone because a training streams from them.
        failed: Entries that could not be deleted, with the reason.
    """

    deleted: list
    in_use: list
    failed: dict


def clear_feature_cache(cache_dir: Union[str, Path, None] = None) -> ClearedCache:
    """Deletes every entry of a feature cache that no training is reading.

    Args:
        cache_dir: The cache's root folder (default: `default_cache_dir()`).

    Returns:
        A `ClearedCache`. Other files in `cache_dir` are left alone.
    """
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    cleared = ClearedCache([], [], {})
    if not root.is_dir():
        return cleared
    for path in sorted(p for p in root.iterdir()
                       if p.is_dir() and _ENTRY_NAME.fullmatch(p.name)):
        # No manifest (a partial entry) or no locks: nothing holds it.
        lock = _locks.try_lock(path / MANIFEST, shared=False)
        if lock is False:
            cleared.in_use.append(path)
            continue
        try:
            shutil.rmtree(path)
            cleared.deleted.append(path)
        except OSError as error:
            cleared.failed[path] = error.strerror or str(error)
        finally:
            _locks.release(lock)
    return cleared


class _ShardWriter:
    """Writes rows of one or more arrays, and their labels, in `.npy` shards."""

    def __init__(self, folder):
        self.folder = folder
        self.pending, self.shards, self.rows = [], [], 0
        self.pending_bytes, self.shapes, self.label_dtype = 0, None, None
        self.label_shape = []

    def add(self, outputs, labels):
        outputs = [np.asarray(o, "float32") for o in outputs]
        self.shapes = [list(o.shape[1:]) for o in outputs]
        self.label_dtype = labels.dtype.name
        self.label_shape = list(labels.shape[1:])  # [labels] for multi-hot rows.
        self.pending.append((outputs, labels))
        self.pending_bytes += sum(o.nbytes for o in outputs)
        if self.pending_bytes >= _SHARD_BYTES:
            self._flush()

    def _flush(self):
        if not self.pending:
            return
        index = len(self.shards)
        names = [f"features{part}-{index:05d}.npy" for part in range(len(self.shapes))]
        for part, name in enumerate(names):
            np.save(self.folder / name, np.concatenate([o[part] for o, _ in self.pending]))
        names.append(f"labels-{index:05d}.npy")
        np.save(self.folder / names[-1], np.concatenate([y for _, y in self.pending]))
        self.rows += sum(len(y) for _, y in self.pending)
        self.shards.append(names)
        self.pending, self.pending_bytes = [], 0

    def close(self, **extra):
        self._flush()
        if not self.rows:
            raise TransferError("the dataset is empty; no features to cache")
        return {"rows": self.rows, "shapes": self.shapes, "label_dtype": self.label_dtype,
                "label_shape": self.label_shape, "shards": self.shards, **extra}


def _config_text(model):
    try:
        return json.dumps(_content_config(model.get_config()), sort_keys=True,
                          default=str)
    except (NotImplementedError, TypeError, ValueError):
        return ";".join(f"{type(layer).__name__}:{layer.name}" for layer in
                        _every_layer(model))


def _every_layer(model):
    """The model and every layer inside it, depth first (public `layers` only)."""
    yield model
    for layer in getattr(model, "layers", []):
        yield from _every_layer(layer)


def _content_config(config):
    """A config without what does not change a frozen model's outputs.

    Input layers' names, which Keras numbers per process, and `trainable`
    flags: the cached outputs are computed in inference mode, whichever
    layers are about to train.
    """
    if isinstance(config, list):
        return [_content_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    config = {k: _content_config(v) for k, v in config.items() if k != "trainable"}
    if config.get("class_name") == "InputLayer" and isinstance(config.get("config"), dict):
        config["config"] = {k: v for k, v in config["config"].items() if k != "name"}
    return config


def _remove_abandoned(entry):
    """Deletes abandoned `.partial-*` folders, and the entry if it is damaged."""
    _atomic.remove_abandoned(entry)
    if entry.exists() and read_manifest(entry) is None:
        shutil.rmtree(entry, ignore_errors=True)  # Damaged after the rename.


