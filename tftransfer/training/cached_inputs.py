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

import tensorflow as tf

from tftransfer.data.identity import DataIdentity
from tftransfer.training.feature_cache import cached_features, joined_features

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
        validation_manifest: The validation entry's manifest, or `None`.
    """

    train: tf.data.Dataset
    validation: Optional[tf.data.Dataset]
    manifest: dict
    joined: Optional[tf.data.Dataset] = None
    validation_manifest: Optional[dict] = None


def cached_inputs(frozen, train, validation_data, plan, *, augmentation=None,
                  join_validation=False, below=None):
    """Extracts (or reuses) what `frozen` computes from the data, for a cached phase.

    Args:
        frozen: The frozen part before the part that trains: the
            `"features"` model for phase 1, a `Split.bottom` for phase 2.
        train: `(images, labels)` batches.
        validation_data: The same, or `None`.
        plan: The `Plan`: the data's identities, the cache folder, the
            views and the seed.
        augmentation: The classifier's augmentation model, which makes the
            views (used only when `plan.views`).
        join_validation: Also return the training rows and the validation
            rows (unaugmented, each repeated once per view) as one dataset,
            for the refit.
        below: A `boundary.Split` whose bottom runs first: its activations
            are cached (for phase 2 as well), and `frozen` (its
            `top_features`) runs over them.

    Returns:
        A `CachedInputs`.
    """
    augmentation = augmentation if plan.views else None  # None: unaugmented.
    views = max(1, plan.views or 0)
    train_id, validation_id = plan.train, plan.validation
    if below is not None:
        logger.info("feature cache: the head's features from the activations that the top "
                    "phase trains on, so that the base runs once for both phases")
        train, train_id = _activations(below.bottom, train, train_id, plan, augmentation,
                                       views)
        if validation_data is not None:
            validation_data, validation_id = _activations(below.bottom, validation_data,
                                                          validation_id, plan, None, 1)
        augmentation, views = None, 1  # Already in the activations.
    cached_train, manifest = cached_features(frozen, train, identity=train_id,
                                             cache_dir=plan.cache_dir,
                                             augmentation=augmentation, views=views,
                                             shuffle=True, seed=plan.seed)
    cached_validation = joined = plain = None
    if validation_data is not None:
        cached_validation, plain = cached_features(frozen, validation_data,
                                                   identity=validation_id,
                                                   cache_dir=plan.cache_dir)
    if join_validation:
        # Each validation image weighs as much as a training image, with as
        # many rows as it has views. Unaugmented rows were as accurate as
        # augmented views on 10 photos per class, and need no extraction.
        joined = joined_features([manifest] + [plain] * views, manifest["batch_size"],
                                 shuffle=True, seed=plan.seed)
    return CachedInputs(cached_train, cached_validation, manifest, joined, plain)


def _activations(bottom, dataset, identity, plan, augmentation, views):
    """The bottom's cached activations, and the `DataIdentity` that names them."""
    activations, manifest = cached_features(bottom, dataset, identity=identity,
                                            cache_dir=plan.cache_dir,
                                            augmentation=augmentation, views=views)
    # The entry's name fingerprints the bottom, the data and the views, so
    # it names this content for the next cache's fingerprint.
    return activations, DataIdentity(f"activations:{Path(manifest['path']).name}",
                                     manifest["rows"])
