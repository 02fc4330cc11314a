"""The data's own problems, found from the cached features: duplicates, leaks, label errors, outliers.

Small image sets are full of exact and near copies, of the same photo in
train and test (which inflates every accuracy reported on the test split),
and of mislabelled photos. `audit` reads every split of a folder once
through the frozen base (the features are cached, so a later `train` on
the same data and base reuses them) and reports, without deleting or moving
anything:

* `duplicate`: two files of one split with the same bytes (score 1), or
  near copies (a re-save, a resize, a crop, a colour shift): pairs whose
  features or perceptual hashes are far closer than this set's distinct
  photos ever are, or whose pixels match once aligned
  (`tftransfer.reports.copies`; the cuts are in `copy_cuts`);
* `leak`: the same across splits (train and validation, or train and test);
  `AuditReport.test_accuracy` gives the test accuracy with and without the
  leaked test photos, from a head trained on the training features;
* `label`: a likely label error, by confident learning (`cleanlab`'s
  `find_label_issues`) on leave-one-out probabilities from each photo's
  nearest neighbours in feature space (`pip install "tftransfer[audit]"`);
* `outlier`: a photo far from every other (a blank frame, a screenshot
  among flowers): the mean similarity to its nearest neighbours is more
  than `OUTLIER_Z` robust standard deviations below the typical one.
"""

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Optional, Union

import numpy as np

from tftransfer.defaults import DEFAULT_BATCH_SIZE
from tftransfer.errors import TransferError
from tftransfer.models.features import Base
from tftransfer.reports import copies
from tftransfer.reports.copies import hash_neighbours, perceptual_hash
from tftransfer.training.evidence import softmax_probabilities, softmax_regression

logger = logging.getLogger("tftransfer")

#: Robust z-score (median and MAD of the neighbours' similarity) beyond which
#: a photo is an outlier.
OUTLIER_Z = 4.0
_NEIGHBOURS = 5
_BLOCK = 2048
_KINDS = ("leak", "duplicate", "label", "outlier")


@dataclasses.dataclass
class Finding:
    """One problem found in the data.

    Attributes:
        kind: `"duplicate"`, `"leak"`, `"label"` or `"outlier"`.
        file: The file it concerns.
        other: The other file of a duplicate or leak, the suggested class of
            a label error, `None` for an outlier.
        score: How sure: the similarity of a pair (1 for the same bytes), the
            probability that a label is wrong, an outlier's z-score.
        split: The split of `file`.
    """

    kind: str
    file: str
    other: Optional[str]
    score: float
    split: str


@dataclasses.dataclass
class AuditReport:
    """What `audit` found.

    Attributes:
        findings: Every `Finding`, leaks first, then duplicates, label
            errors and outliers, each kind by score.
        class_names: The class names.
        counts: `{split: images}`.
        test_accuracy: `{"all": a, "without_leaks": b, "leaked": n}` on the
            test split (else validation), from a head trained on the
            training features; `None` without such a split.
        label_check: `"cleanlab"`, or why label errors were not looked for.
        seconds: The audit's wall time, the extraction included.
        files: Every file audited, split by split.
        copy_cuts: Where near copies start in this set, per signal
            (`{"features", "hash", "joint", "aligned"}`: `copies.Cut`s), and why.
    """

    findings: list
    class_names: list
    counts: dict
    test_accuracy: Optional[dict]
    label_check: str
    seconds: float
    files: list = dataclasses.field(default_factory=list)
    copy_cuts: dict = dataclasses.field(default_factory=dict)

    def of_kind(self, kind: str) -> list:
        """The findings of one kind."""
        return [f for f in self.findings if f.kind == kind]

    def table(self, limit: int = 40) -> str:
        """The findings as text, for the terminal: the first `limit` rows."""
        rows = [f"{'problem':10s} {'score':>6s}  file  ->  other / suggested label"]
        for f in self.findings[:limit]:
            rows.append(f"{f.kind:10s} {f.score:6.3f}  {f.file}  ->  {f.other or ''}")
        if len(self.findings) > limit:
            rows.append(f"... and {len(self.findings) - limit} more (see audit.json)")
        return "\n".join(rows)

    def summary(self) -> str:
        """One line: how many of each kind, and the leak's effect on accuracy."""
        counts = ", ".join(f"{len(self.of_kind(k))} {k}(s)" for k in _KINDS)
        text = f"{sum(self.counts.values())} images: {counts}"
        a = self.test_accuracy
        if a and a["leaked"]:
            without = "n/a" if a["without_leaks"] is None else f"{a['without_leaks']:.1%}"
            text += (f"; {a['split']} accuracy {a['all']:.1%} with the {a['leaked']} leaked "
                     f"photo(s), {without} without")
        return text

    def clean_list(self) -> list:
        """The files to keep: all but the copy in each duplicate pair and each leaked
        held-out photo. Suspected label errors and outliers stay: the user decides."""
        drop = {f.file for f in self.findings if f.kind in ("duplicate", "leak")}
        return [file for file in self.files if file not in drop]

    def to_dict(self) -> dict:
        """The report as JSON-ready values (what `audit.json` holds)."""
        return {"findings": [dataclasses.asdict(f) for f in self.findings],
                "class_names": self.class_names, "counts": self.counts,
                "test_accuracy": self.test_accuracy, "label_check": self.label_check,
                "seconds": self.seconds,
                "copy_cuts": {k: dataclasses.asdict(v) if v else None
                              for k, v in self.copy_cuts.items()}}


def audit(data: Union[str, Path], base: Base, *, cache_dir: Union[str, Path, None] = None,
          near_duplicate: Optional[float] = None, batch_size: int = DEFAULT_BATCH_SIZE
          ) -> AuditReport:
    """Finds duplicates, train/test leaks, likely label errors and outliers in a folder.

    Args:
        data: A folder of class subfolders, or of `train/ val/ test/` splits.
        base: A `Base` (`load_base`), whose features the audit compares.
        cache_dir: The feature cache's folder (default: the feature cache's).
        near_duplicate: The cosine similarity of features from which two
            photos count as copies; `None` reads it from the data
            (`copies.copy_cuts`). Close perceptual hashes find copies too.
        batch_size: Images per batch through the base.

    Returns:
        An `AuditReport`.
    """
    from tftransfer.data.loader import source_files
    from tftransfer.data.sources import split_images
    from tftransfer.training.feature_cache import cached_features

    start = time.perf_counter()
    splits, class_names, _ = split_images(data, base.input_size, batch_size=batch_size)
    files, names, features, labels, grey, thumbnails = [], [], [], [], [], []
    for split, dataset in splits.items():
        rows, _ = cached_features(base.features, dataset, cache_dir=cache_dir)
        for x, y in rows.as_numpy_iterator():
            features.append(np.asarray(x, np.float32).reshape(len(y), -1))
            labels.append(np.asarray(y).reshape(-1))
        for images, _ in dataset:
            views = _small_views(images)
            grey.append(views[0])
            thumbnails.append(views[1])
        files += source_files(dataset)
        names += [split] * len(source_files(dataset))
    features, labels = np.concatenate(features), np.concatenate(labels).astype(np.int64)
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    near = neighbourhood(unit, copies.FEATURE_CUT_RANGE[0] if near_duplicate is None
                         else near_duplicate)
    similar, cuts = _near_copies(unit, near, perceptual_hash(np.concatenate(grey)),
                                 np.concatenate(thumbnails), near_duplicate)
    findings = _copies(files, names, similar)
    probabilities, label_check = _label_probabilities(near, labels, len(class_names))
    if probabilities is not None:
        findings += _label_errors(files, names, labels, probabilities, class_names)
    findings += _outliers(files, names, near)
    report = AuditReport(sorted(findings, key=_order), list(class_names),
                         {s: names.count(s) for s in splits},
                         _held_out_accuracy(features, labels, names, findings, files),
                         label_check, time.perf_counter() - start, files, cuts)
    logger.info("audit: %s", report.summary())
    return report


def _small_views(images):
    """A batch of images as the copy signals read them.

    Returns:
        `(grey, thumbnails)`: `[images, 1 + len(CROPS), 32, 32]` grey
        intensities, whole and at `copies.CROPS`, for the hash; and
        `[images, THUMBNAIL, THUMBNAIL, 3]` colour thumbnails (uint8), for
        the aligned signal.
    """
    import tensorflow as tf

    # One resize of the full images; every view is cut from this copy, whose
    # side makes each crop's margin a whole number of pixels.
    side = 120
    small = tf.image.resize(tf.cast(images, tf.float32)[..., :3], (side, side), method="area")
    grey = tf.image.rgb_to_grayscale(small)
    views = [tf.image.resize(grey, (32, 32), method="area")]
    for share in copies.CROPS:
        margin = round(side * (1 - share) / 2)
        views.append(tf.image.resize(grey[:, margin:side - margin, margin:side - margin],
                                     (32, 32), method="area"))
    thumbnails = tf.image.resize(small, (copies.THUMBNAIL, copies.THUMBNAIL), method="area")
    return (tf.stack(views, axis=1)[..., 0].numpy(),
            tf.cast(tf.round(tf.clip_by_value(thumbnails, 0, 255)), tf.uint8).numpy())


def _near_copies(unit, near, bits, thumbnails, near_duplicate):
    """The pairs that any signal calls copies, with their feature similarity; the cuts."""
    nearest_hash, closest_hash, hash_pairs = hash_neighbours(bits,
                                                             cut=copies.HASH_CUT_RANGE[1])
    nearest = near.similarity.max(axis=1) if near.similarity.size else np.zeros(0)
    cuts = copies.copy_cuts(nearest, nearest_hash)
    aligned = _aligned_pairs(near, closest_hash, thumbnails, cuts)
    if near_duplicate is not None:
        cuts["features"] = copies.Cut(near_duplicate, cuts["features"].typical,
                                      cuts["features"].spread, "given (--near-duplicate)")
    pairs = {(i, j): s for i, j, s in near.pairs if s >= cuts["features"].value}
    if hash_pairs:
        # Vectorised: sets of look-alike images (satellite tiles) have many
        # hash pairs within the widest cut.
        first, second, distance = (np.array(column) for column in zip(*hash_pairs))
        similarity = np.einsum("ij,ij->i", unit[first], unit[second])
        copy = (distance <= cuts["hash"].value) | (
            copies.joint_z(similarity, distance, cuts) >= cuts["joint"].value)
        for i, j, s in zip(first[copy], second[copy], similarity[copy]):
            pairs.setdefault((int(i), int(j)), float(s))
    for i, j in aligned:
        pairs.setdefault((i, j), float(unit[i] @ unit[j]))
    return [(i, j, s) for (i, j), s in pairs.items()], cuts


def _aligned_pairs(near, closest_hash, thumbnails, cuts):
    """Each photo and its nearest other on either signal, aligned: the pairs that match.

    Adds the aligned signal's `Cut` to `cuts`.
    """
    if not len(thumbnails) > 1:
        return []
    rows = np.arange(len(thumbnails))
    closest = near.nearest[rows, near.similarity.argmax(axis=1)]
    candidates = {(int(min(a, b)), int(max(a, b)))
                  for a, b in zip(np.concatenate([rows, rows]),
                                  np.concatenate([closest, closest_hash])) if a != b}
    candidates = sorted(candidates)
    scores = copies.aligned_similarity(thumbnails, candidates)
    best = np.zeros(len(thumbnails))  # Each photo's best score, for the record.
    for column in np.array(candidates).T:
        np.maximum.at(best, column, scores)
    typical = float(np.median(best))
    cuts["aligned"] = copies.Cut(
        copies.ALIGNED_CUT, round(typical, 4),
        round(float(1.4826 * np.median(np.abs(best - typical))), 4),
        f"fixed: colour pixels of a photo and its nearest other (features or pHash), "
        f"aligned over crops {copies.ALIGN_SCALES[-1]}-1; a copy re-encoded, cropped and "
        f"colour-shifted stays above it (this set's median: {typical:.3f})")
    return [pair for pair, score in zip(candidates, scores) if score >= copies.ALIGNED_CUT]


def _order(finding):
    return _KINDS.index(finding.kind), -finding.score, finding.file


@dataclasses.dataclass
class Neighbourhood:
    """What one pass of similarities over the features gives the audit.

    Attributes:
        pairs: `(i, j, similarity)`, i < j, of rows at least the threshold alike.
        nearest: `[rows, k]` indices of each row's most similar others,
            itself and its exact copies (similarity > 0.9999) left out.
        similarity: `[rows, k]` their similarities.
    """

    pairs: list
    nearest: np.ndarray
    similarity: np.ndarray


def neighbourhood(unit: np.ndarray, threshold: float, k: int = 10,
                  block: int = _BLOCK) -> Neighbourhood:
    """The close pairs and each row's `k` nearest others, from one blocked product.

    `block` rows against all rows at a time, so memory stays at `block` x
    rows similarities, and 20,000 photos take seconds, not a double loop.

    Args:
        unit: Normalised features, `[rows, features]`.
        threshold: The similarity from which a pair is listed.
        k: Neighbours kept per row.
        block: Rows per product.

    Returns:
        A `Neighbourhood`.

    Example:
    >>> rows = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0]])
    >>> unit = rows / np.linalg.norm(rows, axis=1)[:, None]
    >>> [(i, j) for i, j, _ in neighbourhood(unit, 0.9, k=1).pairs]
    [(0, 1)]
    """
    k = max(1, min(k, len(unit) - 1))
    pairs, nearest, similarity = [], [], []
    for first in range(0, len(unit), block):
        sims = unit[first:first + block] @ unit.T
        rows, cols = np.nonzero(sims >= threshold)
        keep = cols > rows + first
        pairs += [(int(r + first), int(c), float(sims[r, c]))
                  for r, c in zip(rows[keep], cols[keep])]
        sims[sims > 0.9999] = -np.inf  # Itself, and exact copies of it.
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        nearest.append(top)
        similarity.append(np.take_along_axis(sims, top, axis=1))
    return Neighbourhood(pairs, np.concatenate(nearest), np.concatenate(similarity))


def same_bytes(files: list) -> list:
    """Pairs `(i, j)`, i < j, of files with the same bytes (j a copy of the first, i).

    Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name, text in (("a", "x"), ("b", "y"), ("c", "x")):
    ...     _ = (folder / name).write_text(text)
    >>> same_bytes([folder / "a", folder / "b", folder / "c"])
    [(0, 2)]
    """
    first, pairs = {}, []
    for i, file in enumerate(files):
        digest = hashlib.sha256(Path(file).read_bytes()).hexdigest()
        if digest in first:
            pairs.append((first[digest], i))
        else:
            first[digest] = i
    return pairs


def exact_leaks(folder: Union[str, Path]) -> list:
    """Files of a folder's held-out splits that are byte copies of a training file.

    Cheap enough to run before every training: the files are listed and
    hashed, not decoded. Near copies need the features: `audit`.

    Args:
        folder: A folder of `train/ val/ test/` splits (elsewhere: no splits, no leaks).

    Returns:
        `[(held_out_file, training_file)]`.
    """
    from tftransfer.data.check import layout_files

    files, names = layout_files(folder)
    leaks = []
    for i, j in same_bytes(files):
        if names[i] == names[j] or "train" not in (names[i], names[j]):
            continue
        held, train = (j, i) if names[i] == "train" else (i, j)
        leaks.append((str(files[held]), str(files[train])))
    return leaks


def _copies(files, names, similar):
    """Exact copies (the same bytes) and near ones (`similar` pairs), within or across splits."""
    pairs = {pair: 1.0 for pair in same_bytes(files)}
    for i, j, similarity in similar:
        pairs.setdefault((i, j), min(similarity, 1.0))
    findings = []
    for (i, j), score in pairs.items():
        # The later file is the copy; in a leak, the held-out one is.
        if names[i] != names[j] and names[j] == "train":
            i, j = j, i
        kind = "leak" if names[i] != names[j] else "duplicate"
        findings.append(Finding(kind, files[j], files[i], round(score, 4), names[j]))
    return findings


def _label_probabilities(near, labels, classes):
    """Leave-one-out class probabilities, and `"cleanlab"`, or `(None, why not)`."""
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        return None, ('not looked for: install the extra, pip install "tftransfer[audit]" '
                      "(cleanlab's confident learning)")
    if np.bincount(labels, minlength=classes).min(initial=2) < 2:
        return None, "not looked for: a class has fewer than 2 images"
    return neighbour_probabilities(near, labels, classes), "cleanlab"


def neighbour_probabilities(near: Neighbourhood, labels: np.ndarray,
                            classes: int) -> np.ndarray:
    """Leave-one-out class probabilities from each photo's nearest others.

    A photo's probabilities are the classes of its nearest neighbours by
    cosine similarity (itself and its exact copies left out), weighted by
    similarity, with one pseudo-count per class. Unlike a fitted head's,
    they are never far more confident than the neighbours agree, which is
    what confident learning needs.

    Args:
        near: The `neighbourhood` of the features.
        labels: Integer labels.
        classes: The number of classes.

    Returns:
        `[rows, classes]` probabilities.
    """
    k = near.nearest.shape[1]
    weights = np.maximum(near.similarity, 0)
    weights = weights * k / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
    probabilities = np.ones((len(labels), classes), np.float32)
    np.add.at(probabilities, (np.arange(len(labels))[:, None], labels[near.nearest]),
              weights)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def _label_errors(files, names, labels, probabilities, class_names):
    from cleanlab.filter import find_label_issues

    issues = find_label_issues(labels, probabilities,
                               return_indices_ranked_by="self_confidence")
    return [Finding("label", files[i], class_names[int(probabilities[i].argmax())],
                    round(float(1 - probabilities[i, labels[i]]), 4), names[i])
            for i in issues]


def _outliers(files, names, near):
    """Photos whose nearest neighbours are far less alike than anyone else's."""
    if len(files) <= _NEIGHBOURS + 1:
        return []
    closest = np.sort(near.similarity, axis=1)[:, -_NEIGHBOURS:]
    nearest = closest.mean(axis=1)
    median = np.median(nearest)
    spread = 1.4826 * np.median(np.abs(nearest - median)) + 1e-9
    z = (median - nearest) / spread
    return [Finding("outlier", files[i], None, round(float(z[i]), 2), names[i])
            for i in np.flatnonzero(z > OUTLIER_Z)]


def _held_out_accuracy(features, labels, names, findings, files):
    """Held-out accuracy of a head trained on train/, with and without the leaked photos."""
    names = np.array(names)
    held = "test" if "test" in names else "val" if "val" in names else None
    if held is None or not (names == "train").any():
        return None
    train, scored = names == "train", names == held
    model = softmax_regression(features[train], labels[train], int(labels.max()) + 1)
    right = softmax_probabilities(model, features[scored]).argmax(axis=1) == labels[scored]
    leaked = {f.file for f in findings if f.kind == "leak"}
    clean = np.array([file not in leaked for file, s in zip(files, names) if s == held])
    return {"split": held, "all": float(right.mean()),
            "without_leaks": float(right[clean].mean()) if clean.any() else None,
            "leaked": int((~clean).sum())}


def write_clean_list(report: AuditReport, path: Union[str, Path]) -> Path:
    """Writes the files to keep (`AuditReport.clean_list`), one per line.

    Args:
        report: The audit.
        path: The list's path.

    Returns:
        `path`.
    """
    kept = report.clean_list()
    if not kept:
        raise TransferError("the clean list would be empty")
    Path(path).write_text("".join(f"{file}\n" for file in kept))
    return Path(path)
