"""What the cached phases of `fine_tune` train on, computed once.

Phase 1 trains the head on the base's features; phase 2 trains the unfrozen
top of the base on the activations where its frozen part ends
(`boundary.split_at`). Both are cached by `feature_cache`. When both phases
run, the base runs once: the frozen bottom's activations are extracted for
phase 2, and phase 1's features are the top's output over them, which costs
what the top costs, a fraction of a second pass.
"""

import dataclasses
import logging
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from tftransfer.boundary import split_at
from tftransfer.builder import augmentation_of
from tftransfer.data import register_source
from tftransfer.data.cache import free_space
from tftransfer.data.loader import known_size
from tftransfer.feature_cache import (cached_features, default_cache_dir, entry_spec,
                                      joined_features)

logger = logging.getLogger("tftransfer")


@dataclasses.dataclass
class CachedInputs:
    """A cached phase's data.

    Attributes:
        train: Shuffled `(inputs, labels)` batches of the training rows.
        validation: The validation rows (unaugmented), or `None`.
        manifest: The training entry's manifest (see `cached_features`).
        joined: With `join_validation`, the training rows and the
            validation rows (each repeated once per view) as one shuffled
            dataset.
    """

    train: tf.data.Dataset
    validation: Optional[tf.data.Dataset]
    manifest: dict
    joined: Optional[tf.data.Dataset] = None


def why_not_cached(model, train, feature_cache, views):
    """Returns why the phases cannot train on cached inputs, or `None` if they can.

    Args:
        model: A classifier from `build_classifier`.
        train: The training data.
        feature_cache: As in `fine_tune`.
        views: The resolved `augmented_views` (`None` or 0 for none).

    Returns:
        A reason for the log, or `None`.
    """
    if not feature_cache:
        return "disabled"
    spec = getattr(train, "element_spec", None)
    if not isinstance(spec, tuple) or len(spec) != 2:
        return "the training data is not a tf.data.Dataset of (images, labels)"
    if augmentation_of(model) is not None and views == 0:
        return ("random augmentation makes every epoch's images new; pass "
                "augmented_views=K (--augmented-views K) to cache K views per image")
    return None


def boundary_split(model, train, unfrozen, feature_cache, views):
    """Cuts a classifier for phase 2's cache, if its activations can be cached.

    Args:
        model: A classifier from `build_classifier`; the split is built
            under its strategy's scope, as the trainer trains under it.
        train: The training data.
        unfrozen: How many backbone layers phase 2 trains.
        feature_cache: As in `fine_tune`.
        views: The resolved `augmented_views`.

    Returns:
        `(split, None)` or `(None, reason)`.
    """
    why_not = why_not_cached(model, train, feature_cache, views)
    if why_not is not None:
        return None, why_not
    with model.distribute_strategy.scope():
        split, why_not = split_at(model, unfrozen)
    if split is None:
        return None, why_not
    why_not = _short_of_disk(split, train, feature_cache, views)
    return (None, why_not) if why_not else (split, None)


def cached_inputs(frozen, train, validation_data, *, model, feature_cache, views, seed,
                  join_validation=False, below=None):
    """Extracts (or reuses) what `frozen` computes from the data, for a cached phase.

    Args:
        frozen: The frozen part before the part that trains: the
            `"features"` model for phase 1, a `Split.bottom` for phase 2.
        train: `(images, labels)` batches.
        validation_data: The same, or `None`.
        model: The classifier (its augmentation makes the views).
        feature_cache: `True` or a folder, as in `fine_tune`.
        views: The resolved `augmented_views`.
        seed: Seeds the shuffling.
        join_validation: Also return the training rows and the validation
            rows (unaugmented, each repeated once per view) as one dataset,
            for the refit.
        below: A `boundary.Split` whose bottom runs first: its activations
            are cached (for phase 2 as well), and `frozen` (its
            `top_features`) runs over them.

    Returns:
        A `CachedInputs`.
    """
    cache_dir = None if feature_cache is True else feature_cache
    augmentation = augmentation_of(model) if views else None  # None: unaugmented.
    views = max(1, views or 0)
    if below is not None:
        logger.info("feature cache: phase 1's features from the activations that phase 2 "
                    "trains on, so that the base runs once for both phases")
        train = _activations(below.bottom, train, cache_dir, augmentation, views)
        if validation_data is not None:
            validation_data = _activations(below.bottom, validation_data, cache_dir, None, 1)
        augmentation, views = None, 1  # Already in the activations.
    cached_train, manifest = cached_features(frozen, train, cache_dir=cache_dir,
                                             augmentation=augmentation, views=views,
                                             shuffle=True, seed=seed)
    cached_validation = joined = None
    if validation_data is not None:
        cached_validation, plain = cached_features(frozen, validation_data,
                                                   cache_dir=cache_dir)
    if join_validation:
        # Each validation image weighs as much as a training image, with as
        # many rows as it has views. Unaugmented rows were as accurate as
        # augmented views on 10 photos per class, and need no extraction.
        joined = joined_features([manifest] + [plain] * views, manifest["batch_size"],
                                 shuffle=True, seed=seed)
    return CachedInputs(cached_train, cached_validation, manifest, joined)


def cached_spec(frozen, train):
    """The element spec of the cached batches of what `frozen` computes from `train`.

    Args:
        frozen: As in `cached_inputs`.
        train: `(images, labels)` batches.

    Returns:
        `(features, labels)` specs, as `feature_cache.entry_spec` gives them.
    """
    labels = train.element_spec[1]
    return entry_spec([output.shape[1:] for output in frozen.outputs], labels.dtype,
                      labels.shape[1:])


def _activations(bottom, dataset, cache_dir, augmentation, views):
    """The bottom's cached activations, as a dataset named by their entry."""
    activations, manifest = cached_features(bottom, dataset, cache_dir=cache_dir,
                                            augmentation=augmentation, views=views)
    # The entry's name fingerprints the bottom, the data and the views, so
    # it names this content for the next cache's fingerprint.
    return register_source(activations, f"activations:{Path(manifest['path']).name}")


def _short_of_disk(split, train, feature_cache, views):
    """Why the boundary activations cannot be cached on disk, or `None` if they can."""
    folder = default_cache_dir() if feature_cache is True else feature_cache
    rows = known_size(train)
    if rows is None:
        return None  # Counted while they are written; a full disk then fails there.
    rows *= max(1, views or 0)
    row_bytes = 4 * sum(int(np.prod(t.shape[1:])) for t in split.bottom.outputs)
    free = free_space(folder)
    if rows * row_bytes > free:
        logger.warning("phase 2 cache: the activations (%.1f GB) would not fit in %s "
                       "(%.1f GB free); phase 2 runs uncached", rows * row_bytes / 1e9,
                       folder, free / 1e9)
        return "not enough disk space"
    return None
