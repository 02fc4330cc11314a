"""Classifying image files with an export: files, folders and lists of paths, streamed.

`predict_files` takes any mix of image files, folders (read recursively) and
text files that list paths, reads the images in batches, so that memory
stays flat over any number of them, answers every readable one and names
every one it could not read, with the reason, instead of failing them all.
"""

import dataclasses
import json
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import tensorflow as tf

from tftransfer.data.check import printable
from tftransfer.data.decode import IMAGE_EXTENSIONS, read_header
from tftransfer.defaults import TOP_K
from tftransfer.errors import TransferError
from tftransfer.export.exported import load_exported
from tftransfer.export.model_versions import latest_version
from tftransfer.export.saved_model import export_thresholds

#: Images per call of the model.
PREDICT_BATCH = 64
#: Suffixes of the text files whose lines are paths to classify.
LIST_SUFFIXES = (".txt", ".lst")


@dataclasses.dataclass
class Predictions:
    """What `predict_files` answered.

    Iterating gives `(path, [(class_name, probability), ...])`, best first,
    for every image answered: the top k classes, or for a multi-label model
    the labels over their thresholds.

    Attributes:
        results: Those pairs, in the order the inputs named the images.
        skipped: `{path: reason}` of every image that could not be read.
    """

    results: list
    skipped: dict

    def __iter__(self):
        return iter(self.results)

    def __len__(self):
        return len(self.results)


def image_paths(inputs: Sequence[Union[str, Path]]) -> tuple:
    """The image files that files, folders and lists of paths name.

    Args:
        inputs: Image files; folders, whose images are read recursively in
            sorted order; and text files (`.txt`, `.lst`), one path per line,
            relative to the list's folder.

    Returns:
        `(paths, skipped)`: the images to read, and `{path: reason}` for the
        inputs that name none (missing, or not an image).
    """
    paths, skipped = [], {}
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                            and not p.name.startswith("."))
        elif item.suffix.lower() in LIST_SUFFIXES and item.is_file():
            lines = [line.strip() for line in item.read_text().splitlines()]
            listed, missing = image_paths([item.parent / line for line in lines if line])
            paths += listed
            skipped.update(missing)
        elif item.is_file():
            paths.append(item)
        else:
            skipped[printable(item)] = "not found"
    return paths, skipped


def iter_predictions(model_dir: Union[str, Path], inputs: Sequence[Union[str, Path]], *,
                     top_k: int = TOP_K, batch_size: int = PREDICT_BATCH
                     ) -> Iterator[tuple]:
    """Classifies images batch by batch; yields an answer or a reason for each.

    Args:
        model_dir, inputs, top_k: As in `predict_files`.
        batch_size: Images per call of the model.

    Yields:
        `(path, ranked, None)` for an image answered, `(path, None, reason)`
        for one that could not be read. `ranked` holds `(class_name,
        probability)` pairs, best first: the top k, or for a multi-label
        model every label over its threshold (maybe none).
    """
    model = _Model(model_dir)
    paths, missing = image_paths(inputs)
    for path, reason in missing.items():
        yield path, None, reason
    for start in range(0, len(paths), batch_size):
        batch, contents = [], []
        for path in paths[start:start + batch_size]:
            header = read_header(path)
            if isinstance(header, str):
                yield printable(path), None, header
                continue
            batch.append(path)
            contents.append(path.read_bytes())
        for path, row, reason in model.classify(batch, contents):
            if reason is not None:
                yield printable(path), None, reason
                continue
            best = row.argsort()[::-1]
            if model.thresholds is not None:
                best = [i for i in best if row[i] >= model.thresholds[i]]
            else:
                best = best[:top_k]
            yield printable(path), [(model.names[i], float(row[i])) for i in best], None


def predict_files(model_dir: Union[str, Path], inputs: Sequence[Union[str, Path]], *,
                  top_k: int = TOP_K, batch_size: int = PREDICT_BATCH) -> Predictions:
    """Classifies image files with an exported SavedModel or TFLite file.

    Args:
        model_dir: A base path from `export_saved_model` (its latest version
            is used), a version folder, or a `.tflite` file (with
            `labels.txt` beside it).
        inputs: Image files (JPEG, PNG, GIF, BMP or WebP), folders of them
            (recursively) and text files listing their paths.
        top_k: How many classes to return per image. A multi-label model
            returns every label over its threshold instead.
        batch_size: Images per call of the model; memory grows with it, not
            with the number of images.

    Returns:
        `Predictions`: the answers (iterate over it), and every image that
        could not be read, with why.
    """
    results, skipped = [], {}
    for path, ranked, reason in iter_predictions(model_dir, inputs, top_k=top_k,
                                                 batch_size=batch_size):
        if reason is None:
            results.append((path, ranked))
        else:
            skipped[path] = reason
    return Predictions(results, skipped)


class _Model:
    """An export (`exported.load_exported`) that answers image files one bad file at a time."""

    def __init__(self, model_dir):
        self.exported = load_exported(model_dir)
        if self.exported.class_names is None:
            raise TransferError(f"{self.exported.labels_path} not found; the export "
                                "writes it when given class names")
        self.names, self.thresholds = self.exported.class_names, self.exported.thresholds

    def classify(self, paths, contents):
        """`(path, probabilities, None)` or `(path, None, reason)` for each image."""
        if not paths:
            return []
        try:
            return [(p, row, None)
                    for p, row in zip(paths, self.exported.predict_files(contents))]
        except tf.errors.InvalidArgumentError:
            if len(paths) == 1:
                return [(paths[0], None, "cannot decode it")]
        # One image the header check passed cannot be decoded: find it alone.
        return [answer for path, data in zip(paths, contents)
                for answer in self.classify([path], [data])]


def write_predictions(rows, path: Union[str, Path], top_k: int) -> Optional[int]:
    """Writes `(path, ranked, reason)` rows as CSV or JSON lines, by the file's suffix.

    CSV columns: `path`, `label` and `score` of the best class, then
    `label_2`, `score_2`, ... for the rest of the top k, and `error` (the
    reason an image was not answered). JSON lines: `{"path", "top":
    [[label, score], ...], "error"}`.

    A multi-label model's rows (`top_k=None`) are written as the labels
    over their thresholds: CSV columns `path`, `labels` and `scores`
    (space-separated, best first; the same form as a multi-label
    training CSV), and `error`; JSON lines `{"path", "labels": [[label,
    score], ...], "error"}`.

    Args:
        rows: From `iter_predictions`.
        path: A `.csv` or `.jsonl` file.
        top_k: The k the rows were made with; `None` for a multi-label model.

    Returns:
        The number of images skipped.
    """
    import csv

    path = Path(path)
    if path.suffix not in (".csv", ".jsonl"):
        raise TransferError(f"--predictions {path}: write .csv or .jsonl")
    if top_k is None:
        return _write_label_sets(rows, path)
    skipped = 0
    with path.open("w", newline="") as out:
        header = ["path", "label", "score"]
        for k in range(2, top_k + 1):
            header += [f"label_{k}", f"score_{k}"]
        writer = csv.writer(out) if path.suffix == ".csv" else None
        if writer:
            writer.writerow(header + ["error"])
        for name, ranked, reason in rows:
            skipped += reason is not None
            if writer:
                cells = [c for label, score in (ranked or []) for c in (label, f"{score:.6f}")]
                writer.writerow([name, *cells, *[""] * (2 * top_k - len(cells)), reason or ""])
            else:
                out.write(json.dumps({"path": name, "top": ranked, "error": reason}) + "\n")
    return skipped


def _write_label_sets(rows, path):
    """`write_predictions` for a multi-label model's rows."""
    import csv

    skipped = 0
    with path.open("w", newline="") as out:
        writer = csv.writer(out) if path.suffix == ".csv" else None
        if writer:
            writer.writerow(["path", "labels", "scores", "error"])
        for name, labels, reason in rows:
            skipped += reason is not None
            if writer:
                writer.writerow([name, " ".join(label for label, _ in labels or []),
                                 " ".join(f"{score:.6f}" for _, score in labels or []),
                                 reason or ""])
            else:
                out.write(json.dumps({"path": name, "labels": labels, "error": reason}) + "\n")
    return skipped


def is_multi_label_export(model_dir: Union[str, Path]) -> bool:
    """Whether an export (SavedModel base or version folder, or `.tflite`) is multi-label.

    Args:
        model_dir: As in `predict_files`.

    Returns:
        `True` when it decides each label by a threshold.
    """
    model_dir = Path(model_dir)
    if model_dir.suffix != ".tflite":
        model_dir = latest_version(model_dir)
    return export_thresholds(model_dir) is not None
