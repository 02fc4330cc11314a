"""Where decoded pixels are kept: memory, a folder reused across runs, or nowhere.

Filling memory would end a run out of memory epochs later, so images that
would take more than half of the available memory go to a folder instead.
Folder entries are named by their content and published whole (see
`tftransfer._atomic`), so a later run over the same data reads them and a
killed run leaves nothing that a later one would read.
"""

import hashlib
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from tftransfer import _atomic
from tftransfer.errors import TransferError

logger = logging.getLogger("tftransfer")


def default_image_cache_dir():
    """Returns `~/.cache/tftransfer/images`, where images go that memory cannot hold."""
    return Path.home() / ".cache" / "tftransfer" / "images"


def memory_or_folder(size_bytes):
    """Where `size_bytes` of pixels go: memory (`True`), a folder, or nowhere (`False`).

    Filling memory would end the run out of memory epochs later; a folder
    costs a read per epoch, and decoding every epoch more.
    """
    available = memory_short_of(size_bytes)
    if available is None:
        return True
    folder = default_image_cache_dir()
    room = free_space(folder) > size_bytes
    warn_not_in_memory(size_bytes, available,
                        f"keeping them in {folder} instead" if room else
                        f"{folder} lacks room too, so decoding every epoch instead")
    return folder if room else False


def memory_short_of(size_bytes):
    """The available memory if `size_bytes` would take more than half of it, else `None`."""
    available = available_memory()
    if available is None or size_bytes <= available // 2:
        return None
    return available


def warn_not_in_memory(size_bytes, available, instead):
    logger.warning("image cache: the images (%.1f GB) would take more than half of the "
                   "available memory (%.1f GB); %s (choose with image_cache=DIR, --image-cache "
                   "DIR)", size_bytes / 1e9, available / 1e9, instead)


def free_space(folder):
    """Free bytes on the file system that holds (or would hold) `folder`."""
    folder = Path(folder).absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def available_memory():
    """Bytes of memory available to new allocations, or `None` where unknown."""
    available = None
    try:
        with open("/proc/meminfo") as meminfo:
            available = next(int(line.split()[1]) * 1024 for line in meminfo
                             if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            pass
    try:
        # A container's limit, which /proc/meminfo does not show.
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available or np.inf, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available


def indices_in(decoded, progress=None):
    """Runs a whole pass over `(pixels, label, index)`; returns the indices.

    Args:
        decoded: The dataset.
        progress: A `progress.Progress` to count the examples on, or `None`.
    """
    options = tf.data.Options()
    options.deterministic = True
    parts = [np.zeros(0, np.int64)]
    for indices in decoded.map(_index_of).batch(64).with_options(options).as_numpy_iterator():
        parts.append(indices)
        if progress is not None:
            progress.add(len(indices))
    return np.concatenate(parts)


def _index_of(pixels, label, index):
    return index


def cache_decoded_in_folder(decoded, folder, key, size_bytes, progress=None):
    """Caches decoded pixels in `folder/images-<key>/`, written once, then reused.

    The entry is written in a `.partial-*` folder and renamed into place
    when complete, so a reader never sees half of one. It holds the pixels
    (a `Dataset.cache` file) and the indices of the files that decoded, so
    a reuse reads nothing until the first epoch.

    Args:
        decoded: The decoding pass.
        folder: The cache folder.
        key: Names the entry.
        size_bytes: The pixels' size, checked against the free space.
        progress: A `progress.Progress` counting the files written, or `None`.

    Returns:
        `(cached, indices, reused)`: the dataset reading the cache, the
        indices it holds, and whether an earlier run wrote it.
    """
    entry = folder / f"images-{key[len('files-'):][:40]}"
    _atomic.remove_abandoned(folder / "images-*")

    def write(staging):
        free = free_space(staging)
        if free < size_bytes:
            raise TransferError(f"image cache: {folder} has {free / 1e9:.1f} GB free, the "
                                f"decoded images need {size_bytes / 1e9:.1f} GB; choose "
                                "another folder, or --image-cache none to decode every "
                                "epoch")
        try:
            indices = indices_in(decoded.cache(str(staging / "pixels")), progress)
        except tf.errors.OpError as error:
            # The pass skips files that fail to decode: what fails is the writing.
            raise TransferError(f"image cache: cannot write {staging}: "
                                f"{str(error).splitlines()[0]}") from None
        np.save(staging / "indices.npy", indices)

    reused = _filled_entry(entry, "indices.npy", write)
    return decoded.cache(str(entry / "pixels")), np.load(entry / "indices.npy"), reused


def _filled_entry(entry, marker, write):
    """Makes sure the cache entry `entry` is there, calling `write` if it is not.

    Args:
        entry: The entry's folder.
        marker: The name of the file that `write` saves last: an entry
            holding it is complete and is reused.
        write: Fills the folder it is given (see `_atomic.publish_folder`).

    Returns:
        Whether the entry was there already (an earlier run wrote it).
    """
    if (entry / marker).is_file():
        logger.info("image cache: reusing %s", entry)
        return True
    try:
        _atomic.publish_folder(entry, write)
    except OSError as error:
        raise TransferError(f"image cache: cannot write in {entry.parent}: "
                            f"{error.strerror or error}") from None
    logger.info("image cache: wrote %s", entry)
    return False


def with_known_length(dataset, split):
    """`dataset` with its length asserted, counted in one pass if unknown.

    On a dataset of unknown length (`filter`, `unbatch`, TFRecords,
    generators), Keras counts one optimizer step more per epoch than it
    runs, and learning-rate schedules cannot be sized. A cached dataset is
    filled by the pass, so the first epoch reads the pixels it kept.

    Args:
        dataset: Unbatched `(image, label)` pairs.
        split: Its name, for messages.

    Returns:
        `dataset`, of known length.
    """
    if dataset.cardinality() >= 0:
        return dataset
    start = time.perf_counter()
    length = int(dataset.reduce(np.int64(0), count_one))
    logger.info("%s data: counted %d image(s) in %.1f s (its length was unknown)",
                split, length, time.perf_counter() - start)
    return dataset.apply(tf.data.experimental.assert_cardinality(length))


def count_one(count, pair):
    return count + 1


def dataset_cache_entry(dataset, cache, split):
    """The cache entry of a `tf.data` source: a folder named by its graph's digest.

    Returns:
        The entry's path, or `""` to cache in memory.
    """
    if cache is True:
        return ""
    graph = serialized_graph(dataset)
    if graph is None:
        logger.warning("image cache: this TensorFlow does not show a dataset's graph, so "
                       "its images are cached in memory, not in %s", cache)
        return ""
    if b"PyFunc" in graph:
        # A Python generator's output is not in the graph, so the digest
        # would not change with the images: a later run would read stale ones.
        logger.warning("image cache: a dataset made by Python code (from_generator, "
                       "py_function) is cached in memory, not in %s", cache)
        return ""
    # Arrays and file names are part of the graph: its digest names the content.
    return Path(cache) / f"dataset-{split}-{_graph_digest(graph)[:40]}"


def serialized_graph(dataset) -> Optional[bytes]:
    """A `tf.data.Dataset`'s graph, serialized, or `None` where TensorFlow hides it.

    Args:
        dataset: The dataset.

    Returns:
        The `GraphDef` bytes of the dataset and its sources.
    """
    # No public API shows a dataset's source ops; tf.data's own checkpointing
    # and service use this private method. Callers fall back to what is safe
    # without the graph (`None`).
    serialize = getattr(dataset, "_as_serialized_graph", None)
    if serialize is None:
        return None
    try:
        return serialize().numpy()
    except (TypeError, ValueError, tf.errors.OpError):
        return None


def _graph_digest(serialized_graph):
    """A digest of a dataset's graph that is the same each time it is built.

    Tracing numbers each function and dataset op with a counter that grows
    through the process (`__inference_Dataset_map_prepare_19`,
    `ParallelMapDatasetV2:1`), so the raw bytes differ from one build of the
    same pipeline to the next; the counters are dropped and the functions
    sorted by what remains. Arrays in the graph are hashed as bytes.
    """
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef.FromString(serialized_graph)

    def plain(name):
        return re.sub(r"_\d+$", "", name)

    for node in [*graph.node, *(n for f in graph.library.function for n in f.node_def)]:
        if "metadata" in node.attr:
            del node.attr["metadata"]
        for value in node.attr.values():
            if value.HasField("func"):
                value.func.name = plain(value.func.name)
            for function in value.list.func:
                function.name = plain(function.name)
    for function in graph.library.function:
        function.signature.name = plain(function.signature.name)
    functions = sorted(f.SerializeToString(deterministic=True)
                       for f in graph.library.function)
    graph.ClearField("library")
    digest = hashlib.sha256(graph.SerializeToString(deterministic=True))
    for function in functions:
        digest.update(function)
    return digest.hexdigest()


def cache_dataset_in_folder(dataset, entry):
    """`dataset` cached in the folder `entry`, filled now if it is not there yet.

    The pass that fills it writes in a `.partial-*` folder renamed into place
    when complete: a run killed halfway through a `Dataset.cache` file
    leaves a lockfile that stops every later run over the same data.

    Args:
        dataset: Unbatched `(image, label)` pairs.
        entry: The entry's folder.

    Returns:
        The dataset reading the cache, of known length.
    """
    _atomic.remove_abandoned(entry)

    def write(staging):
        length = dataset.cache(str(staging / "pixels")).reduce(np.int64(0), count_one)
        np.save(staging / "length.npy", length.numpy())

    _filled_entry(entry, "length.npy", write)
    length = int(np.load(entry / "length.npy"))
    return dataset.cache(str(entry / "pixels")).apply(
        tf.data.experimental.assert_cardinality(length))
