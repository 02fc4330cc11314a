"""Copies of one photo, found by three signals.

A copy that was resized, re-encoded or lightly cropped is still the same
photo. Three signals find it, and each misses what another catches:

* the base's features (cosine similarity): robust to crops and colour
  shifts, but how alike two *different* photos of a set look depends on
  the set and the base: distinct flowers of one species score 0.9 on one
  base, distinct satellite tiles 0.97 on another;
* a perceptual hash (pHash: the signs of the low frequencies of a 32 x 32
  grey image's DCT, 64 bits): blind to the set's content, robust to
  resizing, re-encoding and colour shifts. A crop moves it, so each photo
  is hashed whole and at central crops (`CROPS`), and two photos are as
  close as the whole of one is to the whole or any crop of the other.

Neither has one cut that fits every set, so each is cut where this set's
own distinct photos stop: from the distribution of every photo's nearest
other (its median and robust spread), a pair is a copy when it is more
than `Z` robust standard deviations closer than that on either signal, or
`JOINT_Z` on both together (`copy_cuts`, `joint_z`): a cropped, shifted,
re-encoded copy is a little unusual on each, and two different photos are
rarely unusual on both.

The third signal needs no cut from the set: each photo and its nearest
other on either signal are aligned (`aligned_similarity`: one's whole as a
24 x 24 template slid over the other at `ALIGN_SCALES`) and their colour
pixels correlated. Its scale does not move with the set's content: the
same photo cropped, colour-shifted and re-encoded keeps its pixels, two
photos of one scene taken apart do not (docs/benchmarks.md, "Near copies
in every set"). Flat photos (a calm sea) have no pattern to correlate and
score 0. The cuts and their reasons go into `audit.json`.
"""

import dataclasses
from typing import Optional

import numpy as np

#: Robust standard deviations beyond the set's typical nearest other from
#: which a pair counts as a copy, on either signal (docs/audit.md).
Z = 6.0
#: ... or the two signals' robust z-scores together (`joint_z`).
JOINT_Z = 4.0
#: Bounds that hold whatever the set: two photos at least this alike in
#: features are copies, and at most this alike never are ...
FEATURE_CUT_RANGE = (0.90, 0.985)
#: ... and pHashes at most this many bits apart are copies, and never more
#: than this many apart.
HASH_CUT_RANGE = (4, 12)
#: The least spread of each signal: on sets of near-uniform images (flat
#: satellite tiles of water) most nearest hashes sit at one distance, the
#: MAD is 0, and every z-score would be infinite.
MIN_SPREAD = {"features": 0.01, "hash": 1.0}
HASH_BITS = 64
#: The central crops (shares of each side) hashed besides the whole photo.
CROPS = (0.9, 0.8, 0.7)
#: The aligned colour correlation from which two photos are one.
ALIGNED_CUT = 0.985
#: The crops (shares of each side) tried when aligning two photos.
ALIGN_SCALES = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
#: Sides of the stored thumbnail and of the template slid over it: finer
#: templates lose more to half-pixel misalignment than they gain in detail
#: (bench/results/audit.md).
THUMBNAIL, TEMPLATE = 48, 24
#: A photo or window with less spread than this (grey levels, per pixel and
#: colour) is flat: nothing in it to align.
FLAT_SPREAD = 2.0
_BLOCK = 2048


def _dct_matrix(n):
    k = np.arange(n)
    matrix = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix.astype(np.float32)


_DCT32 = _dct_matrix(32)


def perceptual_hash(grey: np.ndarray) -> np.ndarray:
    """pHash bits of grey images already reduced to 32 x 32.

    Args:
        grey: `[..., 32, 32]` intensities (for example `[images, views, 32, 32]`).

    Returns:
        `[..., 64]` booleans: whether each of the 8 x 8 lowest DCT
        frequencies is above the image's median of them.

    Example:
    >>> photo, other = np.random.default_rng(0).random((2, 32, 32)) * 255
    >>> bits = perceptual_hash(np.stack([photo, photo * 0.5 + 10, other]))
    >>> int((bits[0] != bits[1]).sum()), int((bits[0] != bits[2]).sum()) > 10
    (0, True)
    """
    grey = np.asarray(grey, np.float32)
    low = (_DCT32 @ grey @ _DCT32.T)[..., :8, :8].reshape(*grey.shape[:-2], HASH_BITS)
    return low > np.median(low, axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Cut:
    """Where one signal's copies start, in this set.

    Attributes:
        value: The cut: a similarity (copies at or above) or a Hamming
            distance (copies at or below).
        typical: The median of every photo's nearest other.
        spread: Their robust standard deviation (1.4826 x MAD).
        why: How the cut was set, for `audit.json`.
    """

    value: float
    typical: float
    spread: float
    why: str


def copy_cuts(nearest_similarity: np.ndarray, nearest_distance: Optional[np.ndarray],
              z: float = Z) -> dict:
    """The cuts of both signals, from each photo's nearest other.

    Args:
        nearest_similarity: Each photo's highest feature similarity to
            another (exact byte copies left out).
        nearest_distance: Each photo's lowest pHash distance to another,
            or `None` without hashes.
        z: Robust standard deviations beyond the typical nearest other.

    Returns:
        `{"features": Cut, "hash": Cut or None, "joint": Cut or None}`; the
        joint cut's `value` is the least `joint_z` of a copy.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> cuts = copy_cuts(rng.normal(0.8, 0.02, 500), rng.normal(24, 3, 500).round())
    >>> 0.9 <= cuts["features"].value < 0.95, cuts["hash"].value
    (True, 6.0)
    """
    typical, spread = _robust(nearest_similarity, MIN_SPREAD["features"])
    low, high = FEATURE_CUT_RANGE
    value = float(np.clip(typical + z * spread, low, high))
    features = Cut(round(value, 4), round(typical, 4), round(spread, 4),
                   f"median {typical:.3f} + {z:g} x robust sd {spread:.3f} of each photo's "
                   f"most similar other, within [{low}, {high}]")
    hashed = None
    if nearest_distance is not None:
        typical, spread = _robust(nearest_distance, MIN_SPREAD["hash"])
        low, high = HASH_CUT_RANGE
        value = float(np.clip(np.floor(typical - z * spread), low, high))
        hashed = Cut(value, round(typical, 2), round(spread, 2),
                     f"median {typical:.1f} - {z:g} x robust sd {spread:.2f} bits of each "
                     f"photo's nearest pHash, within [{low}, {high}]")
    joint = None if hashed is None else Cut(
        JOINT_Z, 0.0, 0.0, f"the two robust z-scores summed: (similarity - "
        f"{features.typical}) / {features.spread} + ({hashed.typical} - bits) / "
        f"{hashed.spread}")
    return {"features": features, "hash": hashed, "joint": joint}


def joint_z(similarity: float, distance: float, cuts: dict) -> float:
    """How unusually close a pair is on both signals: the sum of their robust z-scores.

    Args:
        similarity: The pair's feature cosine similarity.
        distance: Its pHash distance in bits.
        cuts: `copy_cuts` of the set.

    Returns:
        The sum; a copy from `cuts["joint"].value`.

    Example:
    >>> cuts = copy_cuts(np.array([0.7, 0.8, 0.9]), np.array([14.0, 16, 18]))
    >>> round(joint_z(0.9, 8, cuts), 2)
    3.37
    """
    features, hashed = cuts["features"], cuts["hash"]
    return ((similarity - features.typical) / features.spread
            + (hashed.typical - distance) / hashed.spread)


def _robust(values, least):
    """The median and robust standard deviation (at least `least`)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return 0.0, least
    median = float(np.median(values))
    return median, max(least, float(1.4826 * np.median(np.abs(values - median))))


def hash_neighbours(bits: np.ndarray, cut: Optional[float] = None, block: int = _BLOCK):
    """Each photo's nearest pHash distance, and the pairs within `cut` bits.

    Args:
        bits: `[photos, 64]` booleans (`perceptual_hash`), or `[photos,
            views, 64]`: the whole photo first, then its crops; the
            distance of two photos is then the least between the whole of
            one and any view of the other.
        cut: List the pairs at most this many bits apart (`None`: none).
        block: Rows per product.

    Returns:
        `(nearest, closest, pairs)`: `[photos]` distances to the nearest
        other (itself left out) and its row, and `[(i, j, distance)]` with
        i < j.

    Example:
    >>> bits = np.array([[1, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 0]], bool)
    >>> nearest, closest, pairs = hash_neighbours(bits, cut=1)
    >>> nearest.tolist(), closest.tolist(), pairs
    ([1.0, 1.0, 3.0], [1, 0, 1], [(0, 1, 1.0)])
    """
    views = bits.reshape(len(bits), -1, bits.shape[-1]).astype(np.float32)
    width = views.shape[-1]
    whole = views[:, 0]
    nearest, closest, pairs = [], [], []

    def apart(first, last, one, other):
        return width - (one[first:last] @ other.T + (1 - one[first:last]) @ (1 - other.T))

    for first in range(0, len(bits), block):
        last = first + block
        distance = apart(first, last, whole, whole)
        for view in range(1, views.shape[1]):
            crop = views[:, view]
            distance = np.minimum(distance, np.minimum(apart(first, last, whole, crop),
                                                       apart(first, last, crop, whole)))
        rows = np.arange(len(distance))
        distance[rows, rows + first] = np.inf
        closest.append(distance.argmin(axis=1))
        nearest.append(np.take_along_axis(distance, closest[-1][:, None], axis=1)[:, 0])
        if cut is not None:
            i, j = np.nonzero(distance <= cut)
            keep = j > i + first
            pairs += [(int(a + first), int(b), float(distance[a, b]))
                      for a, b in zip(i[keep], j[keep])]
    if not nearest:
        return np.zeros(0), np.zeros(0, np.int64), pairs
    return np.concatenate(nearest), np.concatenate(closest), pairs


def aligned_similarity(thumbnails: np.ndarray, pairs, chunk: int = 1024) -> np.ndarray:
    """How alike the pixels of each pair are once one is aligned on the other.

    The whole of one photo, shrunk to a `TEMPLATE`-pixel template, is slid
    over the other at each of `ALIGN_SCALES` (every position), both ways;
    the score is the best correlation of the colour pixels, each channel
    about its own mean, so that a copy's colour shift does not count.

    Args:
        thumbnails: `[photos, THUMBNAIL, THUMBNAIL, 3]` colour thumbnails.
        pairs: `[(i, j)]` rows of `thumbnails` to compare.
        chunk: Pairs per batch of convolutions.

    Returns:
        `[pairs]` correlations in [-1, 1]; 0 where either photo is flat.

    Example:
    >>> def scene(share):  # A smooth colour pattern, whole or its central share.
    ...     x = (np.arange(48) + 0.5) / 48 * share + (1 - share) / 2
    ...     grid = np.add.outer(np.sin(7 * x), np.cos(5 * x))[..., None]
    ...     return 120 + 100 * np.sin(grid * [1.0, 2.0, 3.0])
    >>> photos = np.stack([scene(1.0), scene(0.85) * 0.9 + 10, scene(1.0)[::-1]])
    >>> scores = aligned_similarity(photos, [(0, 1), (0, 2)])
    >>> bool(scores[0] > ALIGNED_CUT), bool(scores[1] < 0.5)
    (True, True)
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    rows, pairs = np.unique(pairs, return_inverse=True)
    photos = _Aligner(np.asarray(thumbnails)[rows])
    pairs = pairs.reshape(-1, 2)
    scores = np.zeros(len(pairs), np.float32)
    for first in range(0, len(pairs), chunk):
        one, other = pairs[first:first + chunk, 0], pairs[first:first + chunk, 1]
        scores[first:first + chunk] = np.maximum(photos.contains(one, other),
                                                 photos.contains(other, one))
    return scores


class _Aligner:
    """What each photo brings to every pair it is in, computed once per photo."""

    def __init__(self, thumbnails):
        import tensorflow as tf

        self.pixels = tf.cast(thumbnails, tf.float32)
        template = tf.image.resize(self.pixels, (TEMPLATE, TEMPLATE), method="area")
        self.templates = template - tf.reduce_mean(template, axis=(1, 2), keepdims=True)
        norms = tf.sqrt(tf.reduce_sum(self.templates ** 2, axis=(1, 2, 3)))
        self.flat = TEMPLATE * TEMPLATE * 3 * FLAT_SPREAD ** 2
        self.norms = tf.where(norms ** 2 < self.flat, np.inf, norms)
        # Each window's spread about its mean, per scale: a photo's own, whichever
        # template slides over it.
        self.spreads = []
        for side in self.sides():
            window = tf.image.resize(self.pixels, (side, side), method="area")
            mean = tf.nn.avg_pool2d(window, TEMPLATE, 1, "VALID")
            square = tf.nn.avg_pool2d(window ** 2, TEMPLATE, 1, "VALID")
            spread = TEMPLATE * TEMPLATE * tf.reduce_sum(square - mean ** 2, axis=-1)
            self.spreads.append(tf.where(spread < self.flat, np.inf,
                                         tf.sqrt(tf.maximum(spread, 0.0))))

    @staticmethod
    def sides():
        return [int(round(TEMPLATE / share)) for share in ALIGN_SCALES]

    def contains(self, big, small):
        """The best correlation of each `small` photo's whole anywhere in `big`."""
        import tensorflow as tf

        # Channels first: the FFTs run over the two innermost axes. (FFTs,
        # not a depthwise convolution with a filter per pair: TensorFlow
        # 2.16's oneDNN depthwise convolution crashes on 24 x 24 filters.)
        templates = tf.transpose(tf.gather(self.templates, small), (0, 3, 1, 2))
        norms = tf.gather(self.norms, small)
        best = tf.fill((len(big),), -1.0)
        for side, spreads in zip(self.sides(), self.spreads):
            window = tf.image.resize(tf.gather(self.pixels, big), (side, side), method="area")
            padded = tf.pad(templates, [(0, 0), (0, 0), (0, side - TEMPLATE),
                                        (0, side - TEMPLATE)])
            cross = tf.signal.irfft2d(
                tf.signal.rfft2d(tf.transpose(window, (0, 3, 1, 2)))
                * tf.math.conj(tf.signal.rfft2d(padded)), fft_length=(side, side))
            positions = side - TEMPLATE + 1  # The circular correlation's valid part.
            cross = tf.reduce_sum(cross[:, :, :positions, :positions], axis=1)
            score = cross / (tf.gather(spreads, big) * norms[:, None, None])
            best = tf.maximum(best, tf.reduce_max(score, axis=(1, 2)))
        return best.numpy()
