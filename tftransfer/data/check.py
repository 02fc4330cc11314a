"""The data check: every file is listed, its header read, and it is decoded once.

Each file that cannot be used is skipped, counted and named with its
reason, so that found = used + skipped always holds. The check's decoding
pass is also the first epoch's decoding: with a cache it keeps the pixels.
"""

import dataclasses
import functools
import logging
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from tftransfer.data import cache as data_cache
from tftransfer.data.decode import (DECODER_VERSION, IMAGE_EXTENSIONS, decoder_of,
                                    file_decoder, read_header)
from tftransfer.data.loader import check_class_names, files_key
from tftransfer.errors import TransferError
from tftransfer.progress import Progress, libjpeg_quiet

logger = logging.getLogger("tftransfer")


SPLIT_NAMES = ("train", "val", "test")
#: The folder names read as each split (`val`: the TF tutorials' `validation/`,
#: Kaggle's `valid/`, `dev/` too).
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation", "dev"),
                 "test": ("test",)}


def check_images(paths, *, workers=None):
    """Checks that each file is an image that training can use.

    Each file's header is read (to name its format and size), then it is
    decoded by TensorFlow, the decoder that training uses, in parallel.
    JPEGs are decoded at 1/8 scale here, which still reads every byte of
    the compressed data.

    Args:
        paths: File paths.
        workers: Threads that read headers (default: one per core).

    Returns:
        `(usable, skipped)`: the usable paths, in order, and
        `{path: reason}` for the others. `len(usable) + len(skipped) ==
        len(paths)`.
    """
    paths = [str(p) for p in paths]
    checked = decode_once(paths, [0] * len(paths), None, cache=False, workers=workers)
    return [p for p, ok in zip(paths, checked.usable) if ok], checked.skipped


@dataclasses.dataclass
class Decoded:
    """What `decode_once` gives: the pixels and the verdict on each file.

    Attributes:
        source: `(uint8 pixels, label, index)` of each usable file, `index`
            being its position in the paths given; `None` in a check alone.
        usable: A bool per path.
        skipped: `{path: reason}` for the others.
        order: The indices in the order `source` yields them (grouped by
            decoder, not the paths' order); usable ones only.
    """

    source: Optional[tf.data.Dataset]
    usable: np.ndarray
    skipped: dict
    order: Optional[np.ndarray] = None


@libjpeg_quiet()
def decode_once(paths, labels, image_size, *, cache, workers=None):
    """Checks files by decoding each once, keeping the pixels for training.

    One parallel pass decodes every file whose header is sound: it is the
    last step of the data check, and with a cache it is also the first
    epoch's decoding, so training reads the pixels that the check made.
    The pass runs in a fixed order, so that every worker of a distributed
    run caches the same sequence.

    Args:
        paths: File paths (str).
        labels: An int label per path.
        image_size: `(height, width)`, or `None` to check only.
        cache: `True` (memory), a folder (files named by the content, reused
            by later runs), or `False` (decode again every epoch).
        workers: Threads that read headers.

    Returns:
        A `Decoded`.
    """
    from concurrent.futures import ThreadPoolExecutor

    start = time.perf_counter()
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        headers = list(pool.map(read_header, paths))
    skipped = {p: h for p, h in zip(paths, headers) if isinstance(h, str)}
    usable = np.array([not isinstance(h, str) for h in headers], bool)
    decoders = np.array([decoder_of(h, image_size) if ok else -1
                         for h, ok in zip(headers, usable)])
    labels = np.asarray(labels, np.int32)

    def pipeline(size, indices):
        return _pipeline(paths, labels, decoders, size, indices)

    candidates = np.flatnonzero(usable)
    if not len(candidates):
        return Decoded(None, usable, skipped)
    size_bytes = 0 if image_size is None else (
        len(candidates) * image_size[0] * image_size[1] * 3)
    if image_size is not None and cache is True:
        cache = data_cache.memory_or_folder(size_bytes)
    keep = image_size is not None and cache is not False and cache is not None
    decoded = pipeline(image_size if keep else None, candidates).ignore_errors()
    done = f"decoded {len(candidates)} file(s)"
    progress = Progress(len(candidates), "images")
    if not keep:
        passed = data_cache.indices_in(decoded, progress)
    elif cache is True:
        decoded = decoded.cache()
        passed = data_cache.indices_in(decoded, progress)
    else:
        key = files_key([paths[i] for i in candidates], labels[candidates],
                        tuple(image_size), DECODER_VERSION)
        decoded, passed, reused = data_cache.cache_decoded_in_folder(
            decoded, Path(cache), key, size_bytes, progress)
        if reused:
            done = f"reused {len(candidates)} file(s) decoded by an earlier run,"
    for index in sorted(set(candidates) - set(passed.tolist())):
        usable[index] = False
        skipped[paths[index]] = _decode_problem(paths[index], image_size,
                                                decoders[index], headers[index][0])
    if image_size is None:
        source = None
    elif keep:
        source = decoded
    else:
        source = pipeline(image_size, np.flatnonzero(usable))
    logger.info("data check: %s in %.1f s%s; %d usable", done, time.perf_counter() - start,
                f", kept at {image_size[0]}x{image_size[1]}" if keep else "",
                int(usable.sum()))
    order = _pipeline_order(decoders, candidates)
    return Decoded(source, usable, skipped,
                   order=None if source is None else order[usable[order]])


def _pipeline(paths, labels, decoders, size, indices):
    """Decodes `paths[indices]`: each decoder's files by a map of their own."""
    groups = []
    for decoder, members in zip(np.unique(decoders[indices]),
                                _groups(decoders, indices)):
        files = tf.data.Dataset.from_tensor_slices(
            ([paths[i] for i in members], labels[members], members))
        groups.append(files.map(file_decoder(size, decoder),
                                num_parallel_calls=tf.data.AUTOTUNE))
    return functools.reduce(tf.data.Dataset.concatenate, groups)


def _groups(decoders, indices):
    return [indices[decoders[indices] == decoder] for decoder in np.unique(decoders[indices])]


def _pipeline_order(decoders, indices):
    """The order in which `_pipeline` yields `indices`: grouped by decoder."""
    return np.concatenate(_groups(decoders, indices))


def _decode_problem(path, image_size, decoder, image_format):
    """Why a file failed in the decoding pass, from decoding it alone."""
    try:
        file_decoder(image_size, decoder)(tf.constant(path), 0, 0)
    except tf.errors.OpError as error:
        message = error.message.split("}}")[-1].strip().splitlines()[0]
        return f"cannot decode {image_format}: {message.split(' [Op:')[0]}"
    return f"cannot decode {image_format} (it failed once, then decoded: did it change?)"


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
    for path in entries:
        if not path.is_dir():
            skipped[printable(path)] = "not in a class folder"
    for class_dir in [d for d in class_dirs if not _utf8(d.name)]:
        class_dirs.remove(class_dir)
        for path, _ in _walk(class_dir):
            skipped[printable(path)] = "its class folder's name is not UTF-8"
    for class_dir in class_dirs:
        files[class_dir.name] = []
        for path, reason in _walk(class_dir):
            if reason is None and not _utf8(str(path)):
                reason = "the file name is not UTF-8"
            if reason is None and path.name.startswith("."):
                reason = "hidden file"
            if reason is None and path.suffix.lower() not in IMAGE_EXTENSIONS:
                reason = f"not an image extension ({path.suffix or 'none'})"
            if reason is None:
                files[class_dir.name].append(str(path))
            else:
                skipped[printable(path)] = reason
    return [d.name for d in class_dirs], files, skipped


def printable(path):
    """A path as text that any terminal and JSON can hold: bytes that are not
    UTF-8 (a name from another system's encoding) are shown as `\\xNN`."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _utf8(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk(folder, seen=None):
    """Yields `(path, None)` per file below `folder`, `(path, reason)` per problem."""
    seen = set() if seen is None else seen
    real = os.path.realpath(folder)
    if real in seen:
        yield folder, "symlink loop (a folder already listed)"
        return
    seen.add(real)
    try:
        # Directory entries know their type without a stat per file.
        with os.scandir(folder) as entries:
            children = sorted(entries, key=lambda entry: entry.name)
    except OSError as error:
        yield folder, f"unreadable folder: {error.strerror}"
        return
    for entry in children:
        child = Path(entry.path)
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError as error:
            yield child, ("broken or looping symlink" if entry.is_symlink()
                          else f"unreadable: {error.strerror}")
            continue
        if is_dir:
            yield from _walk(child, seen)
        elif is_file:
            yield child, None
        else:
            yield child, ("broken or looping symlink" if entry.is_symlink()
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
    """
    report, _, _ = check_folder(path, None, cache=False)
    return report


def check_folder(path, image_size, *, cache):
    """`check_data`, decoding at `image_size` and keeping the pixels as `cache` says.

    Returns:
        `(report, decoded, paths)`: the `DataReport`, the `Decoded` pass
        and the paths that it numbers.
    """
    root = Path(path)
    if not root.is_dir():
        raise TransferError(f"data folder not found: {root}")
    layout, unused = _layout(root)
    listings = {split: list_class_folder(folder) for split, folder in layout.items()}
    class_names = listings["train"][0]
    check_class_names(class_names, layout["train"])
    problems, skipped, listed = [], dict(unused), []  # listed: (split, class, path)
    if len(class_names) < 2:
        found_names = f" ({', '.join(class_names)})" if class_names else ""
        problems.append(f"{layout['train']} has {len(class_names)} class folder(s)"
                        f"{found_names}; a classifier needs at least 2")
    for split, folder in layout.items():
        names, files, not_candidates = listings[split]
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            problems.append(f"{folder} has classes that {layout['train']} lacks: "
                            f"{', '.join(unknown)}")
        skipped.update(not_candidates)
        listed += [(split, name, p) for name in names for p in files[name]]
    paths = [p for _, _, p in listed]
    labels = [class_names.index(name) if name in class_names else 0
              for _, name, _ in listed]
    found = len(listed) + len(skipped)
    decoded = decode_once(paths, labels, image_size, cache=cache)
    skipped.update(decoded.skipped)
    used = {split: {} for split in layout}
    for (split, name, path), ok in zip(listed, decoded.usable):
        used[split].setdefault(name, [])
        if ok:
            used[split][name].append(path)
    empty = [n for n in class_names if not used["train"].get(n)]
    if empty:
        problems.append(f"no usable images for class(es) {', '.join(empty)} "
                        f"in {layout['train']}")
    report = DataReport(found, used, skipped, problems, class_names)
    return report, decoded, paths


def _layout(root):
    """`({"train": folder, "val": ..., "test": ...}, unused)` for either folder layout.

    In the split layout, every file beside or below the split folders that
    no split reads is in `unused` (`{path: reason}`), so that it is counted
    and named, not silently left out.
    """
    train = root / "train"
    if not (train.is_dir() and any(p.is_dir() for p in train.iterdir())):
        return {"train": root}, {}
    layout = {}
    for split, names in SPLIT_FOLDERS.items():
        present = [root / name for name in names if (root / name).is_dir()]
        if len(present) > 1:
            raise TransferError(f"{root} has {' and '.join(p.name + '/' for p in present)}: "
                                f"more than one {split} split; keep one")
        if present:
            layout[split] = present[0]
    reason = f"not in a split folder ({', '.join(p.name + '/' for p in layout.values())})"
    unused = {}
    for entry in sorted(root.iterdir()):
        if entry in layout.values():
            continue
        for path, _ in (_walk(entry) if entry.is_dir() else [(entry, None)]):
            unused[printable(path)] = reason
    return layout, unused


def layout_files(root):
    """The image files of a folder, listed but not decoded, with the split of each.

    Args:
        root: A folder of class subfolders, or of `train/ val/ test/` splits.

    Returns:
        `(files, splits)`: paths, and `"train"`, `"val"` or `"test"` for each.
    """
    files, splits = [], []
    layout, _ = _layout(Path(root))
    for split, folder in layout.items():
        _, by_class, _ = list_class_folder(folder)
        for paths in by_class.values():
            files += paths
            splits += [split] * len(paths)
    return files, splits


def log_skipped(report):
    if not report.skipped:
        return
    logger.warning("skipped %d unusable file(s) (%s):", len(report.skipped),
                   report.summary())
    for path, reason in sorted(report.skipped.items()):
        logger.warning("  %s: %s", path, reason)
