"""What the `"auto"` settings of `fine_tune` resolve to, from the data.

Each rule reads how many labelled images there are, per class, and was
chosen with `bench/quality.py` on real photos (see docs/training.md):

* `unfreeze="auto"`: how much of the base phase 2 trains (`AUTO_UNFREEZE`);
* `augmented_views="auto"`: whether, and how many, augmented views of the
  images the cached phases see (`auto_views`, `AUGMENT_BELOW`);
* `refit="auto"`: whether the head is trained again on the training and
  validation images together (`REFIT_BELOW`);
* `class_weight="auto"`: weights that balance imbalanced classes;
* and, once the features are extracted, whether the top phase runs at all
  (`top_phase_from_evidence`), from what the frozen features already
  achieve out of fold on every labelled image (`tftransfer.training.evidence`).
"""

import dataclasses
import logging
import math

import numpy as np

from tftransfer.data.identity import identify
from tftransfer.defaults import NO_UNFREEZE
from tftransfer.models.builder import augmentation_of, backbone_layers
from tftransfer.models.features import find_backbone, is_module_backbone

logger = logging.getLogger("tftransfer")

#: `unfreeze="auto"`: `(fewer than N training images in the smallest class,
#: fraction of the backbone's layers that the top phase trains)`. More data
#: supports more trainable layers without overfitting (Yosinski et al.,
#: 2014). Below 30 images in the smallest class the top phase is skipped:
#: there the head refit on the validation images too (`REFIT_BELOW`) beat
#: it (docs/training.md#defaults-that-follow-the-data).
AUTO_UNFREEZE = ((30, 0.0), (100, 0.25), (500, 0.5), (math.inf, 1.0))
#: ... but a TF Hub module's top phase is skipped below this many images in
#: the smallest class. A module cannot be cut and cached, so each top-phase
#: epoch runs all of it: on small sets that phase cost several times the
#: head's time and gave no accuracy on average
#: (docs/benchmarks.md#tf-hub-modules-in-the-top-phase).
MODULE_TOP_PHASE_FROM = 100


def auto_unfreeze(model, images_per_class):
    """Returns the `unfreeze` depth that `"auto"` picks for this much data.

    Args:
        model: A classifier from `build_classifier`.
        images_per_class: The training images in the smallest class.

    Returns:
        An int: that many of the backbone's top layers (for a TF Hub module,
        of its variables) train in phase 2, by `AUTO_UNFREEZE`; 0 skips
        phase 2, as it is for a TF Hub module below `MODULE_TOP_PHASE_FROM`.
    """
    fraction = next(f for limit, f in AUTO_UNFREEZE if images_per_class < limit)
    if not is_module_backbone(model):
        total = len(backbone_layers(model))
    else:
        total = len(find_backbone(model).fine_tunable_variables)
        if images_per_class < MODULE_TOP_PHASE_FROM:
            return 0
    return int(round(fraction * total))


#: `augmented_views="auto"` augments when the smallest class has fewer
#: training images than this; with more, the cached phases see the images as
#: they are. Views gained 1.5 to 2.2 points at 8 images per class and lost
#: up to 3.6 at 16, on three datasets and both bases
#: (docs/benchmarks.md#augmented-views-by-images-per-class).
AUGMENT_BELOW = 12
#: ... with enough views that the smallest class has about this many cached
#: rows, and at most `MAX_VIEWS`, past which more views stopped paying.
VIEW_ROWS = 48
MAX_VIEWS = 8
#: `refit="auto"` refits the head when the smallest class has fewer training
#: images than this and the top phase does not run: holding out a fifth of a
#: few photos per class for validation costs accuracy, which training again
#: on all of them, for the epochs early stopping found, wins back.
REFIT_BELOW = 30


def auto_views(images_per_class):
    """Returns the cached augmented views that `"auto"` picks for this much data.

    Args:
        images_per_class: The training images in the smallest class.

    Returns:
        An int: 0 for none (from `AUGMENT_BELOW` images up), else enough
        views for about `VIEW_ROWS` rows in the smallest class, at most
        `MAX_VIEWS`.

    Example:
    >>> auto_views(8), auto_views(11), auto_views(12)
    (6, 5, 0)
    """
    if images_per_class >= AUGMENT_BELOW:
        return 0
    return min(MAX_VIEWS, max(2, math.ceil(VIEW_ROWS / max(1, images_per_class))))


#: The top phase runs only when the frozen features leave at least this share
#: of the images misclassified out of fold (`Evidence.headroom`): below it,
#: fine-tuning had too little to gain to be told from its noise
#: (docs/training.md#whether-the-top-phase-runs-the-evidence).
TOP_PHASE_HEADROOM = 0.04


def top_phase_from_evidence(evidence):
    """Whether the top phase runs, from the evidence of the cached features.

    Args:
        evidence: An `evidence.Evidence`, or `None` if it could not be
            measured.

    Returns:
        `(runs, reason)`: a bool and a line for the log.
    """
    if evidence is None:
        return True, "runs: no evidence (too few images to measure it)"
    text = (f"out-of-fold accuracy {evidence.oof_accuracy:.3f} ± "
            f"{evidence.oof_accuracy_se:.3f}")
    if evidence.headroom < TOP_PHASE_HEADROOM:
        return False, f"skipped: {text}, headroom below {TOP_PHASE_HEADROOM}"
    return True, f"runs: {text}, headroom {evidence.headroom:.3f} >= {TOP_PHASE_HEADROOM}"


def resolve(model, counts, phase, views, refit="auto"):
    """Resolves the `"auto"` settings of `fine_tune` from the data.

    Args:
        model: A classifier from `build_classifier`.
        counts: The training images of each class (`DataIdentity.counts`);
            only read when something is `"auto"`.
        phase: The top phase's `Phase`.
        views: `augmented_views`.
        refit: `refit`.

    Returns:
        `(phase, views, refit)`; `views` is `None` where the cached phases
        are to ignore the model's augmentation.
    """
    if "auto" not in (phase.unfreeze, views, refit):
        return phase, views, refit
    smallest = int(min(counts))
    if phase.unfreeze == "auto" and phase.epochs > 0:
        depth = auto_unfreeze(model, smallest)
        module = is_module_backbone(model)
        logger.info("unfreeze 'auto': the top %d %s for %d training images in the smallest "
                    "class (or label)%s", depth,
                    "variable(s) of the TF Hub module" if module else "backbone layer(s)",
                    smallest, "; phase 2 skipped" if depth == 0 else "")
        if module and depth == 0 and smallest < MODULE_TOP_PHASE_FROM:
            logger.info("a TF Hub module's top phase runs the whole module every epoch; "
                        "below %d images per class it did not pay for that; pass "
                        "top=Phase.top(unfreeze=N) (--unfreeze N) to run it",
                        MODULE_TOP_PHASE_FROM)
        phase = dataclasses.replace(phase, unfreeze=depth or NO_UNFREEZE)
    if views == "auto":
        views = None
        if augmentation_of(model) is not None:
            views = auto_views(smallest) or None
            if views:
                logger.info("augmented views 'auto': %d cached views of each image (%d "
                            "images in the smallest class)", views, smallest)
            else:
                logger.info("augmented views 'auto': cached features of the images "
                            "unaugmented (%d >= %d images in the smallest class); pass "
                            "augmented_views=K to augment", smallest, AUGMENT_BELOW)
    if refit == "auto":
        refit = not phase.trains_backbone and smallest < REFIT_BELOW
    return phase, views, refit


def balanced_class_weight(train, num_classes):
    """Returns `{label: total / (num_classes * count)}` for a training set.

    Args:
        train: `(images, labels)` batches; one pass is made over the labels.
        num_classes: The number of classes.

    Returns:
        A dict for `model.fit(class_weight=...)`, or `None` when the
        classes are balanced (every weight would be 1).
    """
    return weights_for_counts(identify(train, num_classes).counts)


def weights_for_counts(counts):
    """`balanced_class_weight` from the label counts themselves.

    Args:
        counts: The examples of each label.

    Returns:
        As `balanced_class_weight`.
    """
    counts = np.asarray(counts)
    num_classes = len(counts)
    if counts.min() == counts.max():
        return None
    weights = {label: float(counts.sum() / (num_classes * count)) if count else 0.0
               for label, count in enumerate(counts)}
    logger.info("class weights for imbalanced data (counts %s): %s", counts.tolist(),
                {k: round(v, 3) for k, v in weights.items()})
    return weights
