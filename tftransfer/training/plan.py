"""The plan of a `fine_tune` call: everything that `"auto"` and the cache decide, resolved once.

`plan_fine_tune` reads the training data once (its content's key and its
class counts, `data.identify`), resolves every `"auto"` setting from them
(`tftransfer.training.auto`), and decides for each phase whether it trains on cached
inputs, where phase 2's cut is, and why a phase is not cached. The result,
a `Plan`, is immutable: `fine_tune` runs it phase by phase, and
`tftransfer train --dry-run` prints it without training.
"""

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import keras
import numpy as np
import tensorflow as tf

from tftransfer.data.cache import free_space
from tftransfer.data.identity import DataIdentity, identify
from tftransfer.defaults import NO_UNFREEZE
from tftransfer.errors import TransferError
from tftransfer.models.boundary import Split, split_at
from tftransfer.models.builder import augmentation_of, unfrozen_count
from tftransfer.models.features import is_module_backbone
from tftransfer.models.multi_label import is_multi_label, positive_weights
from tftransfer.training import auto, keep
from tftransfer.training.distribute import is_multi_worker
from tftransfer.training.feature_cache import default_cache_dir
from tftransfer.training.phases import HEAD, TOP, Phase

if TYPE_CHECKING:
    from tftransfer.training.evidence import Evidence

logger = logging.getLogger("tftransfer")

#: The head's rate when `"auto"` cannot run its range test (no cached features).
FALLBACK_HEAD_RATE = 1e-3

#: The reason a phase is not cached when the caller turned the cache off.
DISABLED = "disabled"
#: How `fine_tune` chooses between the two phases' weights.
KEEP_RULE = (keep.KEEP_RULE.format(alpha=keep.ALPHA) + "; without validation data, the "
             "top phase's unless its training loss is higher than the head's")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How `fine_tune` runs: devices, caching, backups, shuffling.

    None of these changes what the phases compute, only where and how fast
    (and, with `seed`, in which order the cached rows come).

    Attributes:
        jit_compile: XLA compilation of the training step: `True`, `False`,
            or `"auto"` (Keras' choice: on for GPUs and TPUs).
        learning_rate_scaling: The learning rates are for one replica's
            batch; with N replicas in sync they are multiplied by sqrt(N)
            (`"sqrt"`, suited to Adam), N (`"linear"`), or not (`None`).
        backup_dir: If set, each epoch of both phases is backed up there
            (weights and optimizer state), and a call with the same folder
            after a crash or preemption resumes where the last one stopped,
            in the right phase (see `tftransfer.training.backups`). With several
            workers it must be on storage that all of them share.
        feature_cache: The head trains on features that the frozen base
            computes once, and the top on the activations that the frozen
            layers below it compute once (see `tftransfer.training.cached_inputs`).
            `True` caches them in the default folder (`default_cache_dir`),
            a path caches them there, `False` runs the whole model every
            epoch of both phases.
        seed: Seeds the shuffling of cached rows.

    Example:
    >>> RunOptions(backup_dir="backups/run1").learning_rate_scaling
    'sqrt'
    """

    jit_compile: Union[bool, str] = "auto"
    learning_rate_scaling: Optional[str] = "sqrt"
    backup_dir: Optional[str] = None
    feature_cache: Union[bool, str, Path] = True
    seed: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class PhasePlan:
    """One phase as it will run.

    Attributes:
        name: `"head"` or `"top"`.
        phase: The `Phase`, with `"auto"` resolved (`unfreeze` is a count
            of backbone layers, or of a TF Hub module's variables).
        cached: Whether it trains on cached inputs.
        why_not_cached: Why it does not, or `None`.
    """

    name: str
    phase: Phase
    cached: bool
    why_not_cached: Optional[str] = None

    @property
    def runs(self) -> bool:
        """Whether the phase runs at all."""
        if self.name == "top":
            return self.phase.trains_backbone
        return self.phase.epochs > 0


@dataclasses.dataclass(frozen=True)
class Plan:
    """A `fine_tune` call, resolved: what each phase does and on what.

    Attributes:
        head: Phase 1's `PhasePlan`.
        top: Phase 2's `PhasePlan`.
        views: Augmented views of each image that the cached phases see;
            `None` where they see the images unaugmented.
        refit: Whether the head is trained again on the training and
            validation data together (see `fine_tune`).
        class_weight: `{label: weight}`, or `None`. For a multi-label
            model, the weight of each label's positives in the loss
            (`multi_label.positive_weights`), as a list, or `None`.
        label_smoothing: The loss's label smoothing.
        train: The training data's `DataIdentity` (key, rows, counts).
        validation: The validation data's, or `None`.
        cache_dir: The feature cache's folder, or `None` when disabled.
        seed: Seeds the shuffling of cached rows (under several workers, 0
            when `RunOptions.seed` is `None`, so that they shuffle alike).
        unit: What the top phase's `unfreeze` counts: backbone layers, or
            a TF Hub module's variables.
        split: Phase 2's cut (`boundary.Split`) when it is cached, else `None`.
        keep: The rule that chooses between the phases' weights.
        multi_label: Whether the labels are multi-hot (a sigmoid head).
        waits: The decisions that wait for the extraction, because the
            evidence of the cached features rules them: `("top",)` when
            whether the top phase runs does (`auto.top_phase_from_evidence`).
        refit_without_top: With `waits`, whether the head is refit if the
            evidence skips the top phase (`refit="auto"` and few images).
        options: The `RunOptions` it was made with, whole: `run_plan` reads
            the devices, backups and scaling from here.
    """

    head: PhasePlan
    top: PhasePlan
    views: Optional[int]
    refit: bool
    class_weight: Optional[dict]
    label_smoothing: float
    train: DataIdentity
    validation: Optional[DataIdentity]
    cache_dir: Optional[Path]
    seed: Optional[int] = None
    unit: str = "backbone layer(s)"
    split: Optional[Split] = dataclasses.field(default=None, repr=False, compare=False)
    keep: str = KEEP_RULE
    multi_label: bool = False
    waits: tuple = ()
    refit_without_top: bool = False
    options: RunOptions = dataclasses.field(default_factory=lambda: RunOptions(),
                                            compare=False)

    def after_evidence(self, evidence: Optional["Evidence"]) -> tuple:
        """The plan once the evidence is in, and the decision it made.

        Args:
            evidence: The `evidence.Evidence` of the cached features, or `None`.

        Returns:
            `(plan, decision)`: this plan with the top phase skipped if the
            evidence says so (and the head refit, with
            `refit_without_top`), and a line saying what was decided and
            why; `(self, None)` if nothing waited for the evidence.
        """
        if "top" not in self.waits:
            return self, None
        runs, reason = auto.top_phase_from_evidence(evidence)
        plan = dataclasses.replace(self, waits=())
        if not runs:
            top = dataclasses.replace(self.top.phase, epochs=0)
            plan = dataclasses.replace(plan, top=dataclasses.replace(self.top, phase=top),
                                       refit=self.refit_without_top)
            if self.refit_without_top:
                reason += "; the head is refit on the training and validation images"
        return plan, f"top phase: {reason}"

    def to_dict(self) -> dict:
        """The plan as plain values, for JSON and for tests."""
        return {
            "head": _phase_dict(self.head), "top": _phase_dict(self.top),
            "views": self.views, "refit": self.refit,
            "class_weight": self.class_weight, "label_smoothing": self.label_smoothing,
            "train": dataclasses.asdict(self.train),
            "validation": dataclasses.asdict(self.validation) if self.validation else None,
            "cache_dir": str(self.cache_dir) if self.cache_dir else None,
            "seed": self.seed, "unit": self.unit,
            "crossing": self.split.crossing if self.split else None,
            "keep": self.keep, "multi_label": self.multi_label,
            "waits": list(self.waits), "refit_without_top": self.refit_without_top,
        }

    def identity(self) -> dict:
        """What a run resumed from backups must share with the one that wrote them."""
        whole = self.to_dict()
        return {"train": self.train.key,
                "validation": self.validation.key if self.validation else None,
                **{k: whole[k] for k in ("head", "top", "views", "refit", "class_weight",
                                         "label_smoothing", "multi_label")}}

    def describe(self) -> str:
        """The plan in a few lines of text, as `tftransfer train --dry-run` prints it."""
        per = "per label" if self.multi_label else "per class"
        lines = [f"data: {self.train.rows} training images, {per} "
                 f"{list(self.train.counts or [])}"
                 + (f", {self.train.unlabelled} with no label" if self.multi_label else "")
                 + (f"; {self.validation.rows} validation images" if self.validation
                    else "; no validation data"),
                 f"  key: {self.train.key or 'none (' + str(self.train.why_no_key) + ')'}"]
        for part in (self.head, self.top):
            lines.append(_describe_phase(part, self.split if part.name == "top" else None,
                                         self.unit))
        lines.append(f"augmented views: {self.views or 'none (images as they are)'}; "
                     f"refit: {'yes' if self.refit else 'no'}; class weights: "
                     f"{('per-label positive' if self.multi_label else 'balanced') if self.class_weight else 'none'}"
                     + ("; multi-label: sigmoids, binary cross-entropy, thresholds "
                        "for the best F1 on validation" if self.multi_label else ""))
        if "top" in self.waits:
            lines.append("waits for the extraction: whether the top phase runs. It runs if "
                         "a linear head, out of fold on the cached features of the training "
                         "and validation images, misclassifies at least "
                         f"{auto.TOP_PHASE_HEADROOM:.0%} of them"
                         + ("; if it does not, the head is refit" if self.refit_without_top
                            else ""))
        lines.append(f"feature cache: {self.cache_dir or 'disabled'}")
        lines.append(f"keep: {self.keep}")
        return "\n".join(lines)


def plan_fine_tune(model: keras.Model, train: tf.data.Dataset,
                   validation_data: Optional[tf.data.Dataset] = None, *,
                   head: Phase = HEAD, top: Phase = TOP,
                   class_weight: Union[str, dict, None] = "auto",
                   label_smoothing: float = 0.0,
                   augmented_views: Union[str, int] = "auto",
                   refit: Union[str, bool] = "auto",
                   options: Optional[RunOptions] = None) -> Plan:
    """Resolves what `fine_tune` will do with these arguments, without training.

    Reads the training and validation data once each (`data.identify`).

    Args:
        model, train, validation_data, head, top, class_weight,
        label_smoothing, augmented_views, refit, options: As in `fine_tune`.

    Returns:
        A `Plan`.
    """
    options = options or RunOptions()
    _check_arguments(head, class_weight)
    top_auto, refit_auto = top.unfreeze == "auto", refit == "auto"
    num_classes = int(model.output_shape[-1])
    train_id = identify(train, num_classes)
    if train_id.counts is None:
        raise TransferError(f"cannot read the training data: {train_id.why_no_key}; pass a "
                            "finite tf.data.Dataset of (images, labels) batches")
    validation_id = identify(validation_data, num_classes) if validation_data is not None \
        else None
    multi = _checked_labels(model, train_id)
    if class_weight == "auto":
        class_weight = (positive_weights(train_id.counts, train_id.rows) if multi
                        else auto.weights_for_counts(train_id.counts))
    elif multi and isinstance(class_weight, dict):
        class_weight = [float(class_weight.get(i, 1.0)) for i in range(num_classes)]
    if multi and refit == "auto":
        refit = False  # The thresholds are chosen on the validation images: keep them out.
    top, views, refit = auto.resolve(model, train_id.counts, top, augmented_views, refit)
    refit = _checked_refit(refit, top, validation_data)
    # Counted, not set: planning changes nothing in the model.
    unfrozen = unfrozen_count(model, top.unfreeze) if top.epochs > 0 else 0
    top = dataclasses.replace(top, unfreeze=unfrozen or NO_UNFREEZE)
    cache_dir = _cache_dir(options.feature_cache)
    why_not = why_not_cached(model, train_id, options.feature_cache, views)
    if why_not is not None and head.learning_rate == "auto":
        logger.info("head learning rate 'auto' needs cached features; using %g",
                    FALLBACK_HEAD_RATE)
        head = dataclasses.replace(head, learning_rate=FALLBACK_HEAD_RATE)
    split, why_not_top = None, why_not
    if unfrozen > 0 and why_not is None:
        split, why_not_top = boundary_split(model, train_id, unfrozen, cache_dir, views)
    # Whether the top phase runs waits for the evidence of the cached
    # features, where `"auto"` chose its depth and those features will exist.
    waits = ("top",) if top_auto and unfrozen > 0 and why_not is None and not multi else ()
    refit_without_top = bool(waits) and refit_auto and validation_data is not None and \
        int(min(train_id.counts)) < auto.REFIT_BELOW
    return Plan(
        head=PhasePlan("head", head, why_not is None, why_not),
        top=PhasePlan("top", top, split is not None, why_not_top if unfrozen else None),
        views=views, refit=refit, class_weight=class_weight,
        label_smoothing=label_smoothing, train=train_id, validation=validation_id,
        cache_dir=cache_dir if why_not is None else None,
        seed=_seed(options.seed, model.distribute_strategy),
        unit="backbone layer(s)" if not is_module_backbone(model) else
        "variable(s) of the TF Hub module", split=split, multi_label=multi,
        keep=keep.MULTI_LABEL_KEEP_RULE if multi else KEEP_RULE, waits=waits,
        refit_without_top=refit_without_top, options=options)


def _checked_labels(model, train_id):
    """Whether the run is multi-label; refuses labels that do not fit the head."""
    multi = is_multi_label(model)
    if multi != train_id.multi_label:
        raise TransferError(
            "the data has multi-hot labels but the classifier has a softmax head: build it "
            "with multi_label=True (--multi-label)" if train_id.multi_label else
            "the classifier is multi-label but the data has one label per image: pass "
            "multi-hot labels (a CSV with a 'labels' column)")
    return multi


def why_not_cached(model, train_id, feature_cache, views):
    """Returns why the phases cannot train on cached inputs, or `None` if they can.

    Args:
        model: A classifier from `build_classifier`.
        train_id: The training data's `DataIdentity`.
        feature_cache: As in `RunOptions`.
        views: The resolved `augmented_views` (`None` or 0 for none).

    Returns:
        A reason for the log, or `None`.
    """
    if not feature_cache:
        return DISABLED
    if train_id.why_no_key is not None:
        return train_id.why_no_key
    if augmentation_of(model) is not None and views == 0:
        return ("random augmentation makes every epoch's images new; pass "
                "augmented_views=K (--augmented-views K) to cache K views per image")
    return None


def boundary_split(model, train_id, unfrozen, cache_dir, views):
    """Cuts a classifier for phase 2's cache, if its activations fit on disk.

    Args:
        model: A classifier from `build_classifier`; the split is built
            under its strategy's scope, as the trainer trains under it.
        train_id: The training data's `DataIdentity`.
        unfrozen: How many backbone layers phase 2 trains.
        cache_dir: The feature cache's folder.
        views: The resolved `augmented_views`.

    Returns:
        `(split, None)` or `(None, reason)`.
    """
    try:
        with model.distribute_strategy.scope():
            split, why_not = split_at(model, unfrozen)
    except (AttributeError, TypeError, ValueError) as error:
        # Any model that the cut cannot follow trains uncached, as it would anyway.
        return None, f"the classifier cannot be cut at the boundary: {error}"
    if split is None:
        return None, why_not
    rows = train_id.rows * max(1, views or 0)
    row_bytes = 4 * sum(int(np.prod(t.shape[1:])) for t in split.bottom.outputs)
    free = free_space(cache_dir)
    if rows * row_bytes > free:
        logger.warning("phase 2 cache: the activations (%.1f GB) would not fit in %s "
                       "(%.1f GB free); phase 2 runs uncached", rows * row_bytes / 1e9,
                       cache_dir, free / 1e9)
        return None, "not enough disk space"
    return split, None


def _check_arguments(head, class_weight):
    if head.unfreeze != NO_UNFREEZE:
        raise TransferError(f"phase 1 trains the head alone; its unfreeze must be "
                            f"{NO_UNFREEZE!r}, got {head.unfreeze!r}")
    if isinstance(class_weight, str) and class_weight != "auto":
        raise TransferError(f"class_weight must be 'auto', a dict or None, got "
                            f"{class_weight!r}")


def _checked_refit(refit, top, validation_data):
    if refit and validation_data is None:
        logger.info("refit: skipped, as there is no validation data to pick its epochs")
        return False
    if refit and top.trains_backbone:
        raise TransferError("refit=True retrains the head alone, so phase 2 must not run; "
                            "pass top=Phase.top(epochs=0) or refit=False")
    return bool(refit)


def _seed(seed, strategy):
    if seed is None and is_multi_worker(strategy):
        return 0  # Every worker must shuffle alike, or their shares would overlap.
    return seed


def _cache_dir(feature_cache):
    if not feature_cache:
        return None
    return default_cache_dir() if feature_cache is True else Path(feature_cache)


def _phase_dict(part):
    return {"runs": part.runs, "epochs": part.phase.epochs,
            "learning_rate": part.phase.learning_rate, "unfreeze": part.phase.unfreeze,
            "patience": part.phase.patience, "cached": part.cached,
            "why_not_cached": part.why_not_cached}


def _describe_phase(part, split, unit):
    phase = part.phase
    if not part.runs:
        return f"{part.name}: skipped"
    what = "the head alone" if part.name == "head" else \
        f"the top {phase.unfreeze} {unit} and the head"
    text = (f"{part.name}: {what}, up to {phase.epochs} epoch(s) at "
            f"{phase.learning_rate}" + (f", {phase.decay} decay" if phase.decay else "")
            + (f", patience {phase.patience}" if phase.patience is not None else
               ", every epoch"))
    if part.cached:
        cut = f" ({split.crossing} tensor(s) cross the cut)" if split is not None else ""
        return f"{text}; cached{cut}"
    return f"{text}; uncached ({part.why_not_cached})"

