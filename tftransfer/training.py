"""The two-phase routine: train the new head, then fine-tune the top layers.

Phase 1 trains only the head at a normal learning rate; the base is frozen.
Phase 2 unfreezes the top of the base and goes on at a learning rate about
100x lower, warmed up and cosine-decayed, so that the large gradients of a
fresh head never wreck the pretrained features. Both phases stop early and
keep their best weights; if phase 2 never beats phase 1, phase 1's weights
are kept.
"""

import dataclasses
import logging
import math
from typing import Optional

import keras
from keras import ops

from tftransfer.builder import augmentation_of, head_of, set_trainable
from tftransfer.errors import TransferError

logger = logging.getLogger("tftransfer")


@keras.saving.register_keras_serializable(package="tftransfer")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels, with optional label smoothing.

    Keras' own sparse cross-entropy has no `label_smoothing`; this one
    one-hot encodes the labels first when smoothing is asked for.

    Args:
        label_smoothing: In `[0, 1)`; 0.1 is a common choice.

    Example:
    >>> loss = SparseCategoricalCrossentropy(label_smoothing=0.1)
    >>> float(loss([0], [[0.9, 0.1]]))
    """

    def __init__(self, label_smoothing=0.0, name="sparse_categorical_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@dataclasses.dataclass
class FineTuneHistory:
    """The Keras `History` of each phase.

    Attributes:
        head: Phase 1 (the head alone).
        fine_tune: Phase 2 (the unfrozen top), or `None` if it did not run.
        kept_phase: `"head"` if phase 2 never beat phase 1 and phase 1's
            weights were restored, else `"fine_tune"`.
        feature_cache: The manifest of the cached training features used
            by phase 1 (see `cached_features`), or `None`.
    """

    head: keras.callbacks.History
    fine_tune: Optional[keras.callbacks.History] = None
    kept_phase: str = "head"
    feature_cache: Optional[dict] = None

    @property
    def history(self):
        """Both phases' logs joined epoch by epoch, as in `History.history`."""
        phases = [h for h in (self.head, self.fine_tune) if h is not None]
        keys = {k for h in phases for k in h.history}
        return {k: [v for h in phases for v in h.history.get(k, [])] for k in keys}

    @property
    def head_epochs(self):
        """The number of epochs phase 1 ran."""
        return len(self.head.epoch)


def fine_tune(model, train, validation=None, *, head_epochs=50, fine_tune_epochs=20,
              unfreeze=20, head_learning_rate=1e-3, fine_tune_learning_rate=1e-5,
              warmup_epochs=1, patience=5, label_smoothing=0.0, class_weight="auto",
              callbacks=None, log_dir=None, feature_cache=True, augmented_views=0,
              seed=None, verbose="auto"):
    """Trains a classifier in two phases: the head, then the unfrozen top.

    Args:
        model: A classifier from `build_classifier`.
        train: A `tf.data.Dataset` of `(images, labels)` batches.
        validation: Batches to monitor for early stopping (else the
            training loss is monitored).
        head_epochs: The most epochs of phase 1.
        fine_tune_epochs: The most epochs of phase 2; 0 skips it.
        unfreeze: The backbone layers to train in phase 2: an int N (the top
            N), `"all"`, or the name of the lowest layer to train.
        head_learning_rate: Adam's learning rate in phase 1.
        fine_tune_learning_rate: The peak learning rate in phase 2.
        warmup_epochs: Phase 2 ramps its learning rate up over this many
            epochs, then decays it to 0 along a cosine.
        patience: Epochs without improvement before a phase stops.
        label_smoothing: Label smoothing of the cross-entropy.
        class_weight: `"auto"` weighs each class by `total / (classes *
            count)`, so that imbalanced classes count equally (all 1.0 on
            balanced data); a `{label: weight}` dict; or `None`.
        callbacks: Keras callbacks, used in both phases. While phase 1 runs
            on cached features, their `model` is the head.
        log_dir: If set, TensorBoard logs go there.
        feature_cache: Phase 1 trains the head on features that the frozen
            base computes once: `True` caches them in the default folder
            (see `default_cache_dir`), a path caches them there, `False`
            runs the base every epoch.
        augmented_views: With a classifier that has random augmentation,
            cache this many augmented views of each image; 0 runs phase 1
            uncached instead.
        seed: Seeds the shuffling of cached features.
        verbose: Passed to `model.fit`.

    Returns:
        A `FineTuneHistory`.

    Example:
    >>> history = fine_tune(model, train, val, head_epochs=5, fine_tune_epochs=5)
    >>> history.history["val_accuracy"][-1]
    """
    monitor = "val_loss" if validation is not None else "loss"
    extra = list(callbacks or [])
    if log_dir:
        extra.append(keras.callbacks.TensorBoard(log_dir))
    loss = SparseCategoricalCrossentropy(label_smoothing)

    def early_stopping():
        return keras.callbacks.EarlyStopping(monitor, patience=patience,
                                             restore_best_weights=True)

    def run(epochs, learning_rate, initial_epoch=0):
        compile_for(model, learning_rate)
        return model.fit(train, validation_data=validation,
                         epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
                         callbacks=[early_stopping(), *extra], class_weight=class_weight,
                         shuffle=False,
                         verbose=verbose)

    def compile_for(target, learning_rate):
        target.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                       metrics=["accuracy"])

    if isinstance(class_weight, str):
        if class_weight != "auto":
            raise TransferError(f"class_weight must be 'auto', a dict or None, got "
                                f"{class_weight!r}")
        class_weight = balanced_class_weight(train, int(model.output_shape[-1]))
    if fine_tune_epochs > 0:
        set_trainable(model, unfreeze)  # Fails now, not after phase 1, if invalid.
    set_trainable(model, "none")
    why_not = _why_not_cached(model, train, feature_cache, augmented_views)
    if why_not is None:
        result = _fit_head_on_cache(
            model, train, validation, compile_for=compile_for, epochs=head_epochs,
            learning_rate=head_learning_rate, callbacks=[early_stopping(), *extra],
            cache_dir=None if feature_cache is True else feature_cache,
            views=augmented_views, class_weight=class_weight, seed=seed,
            verbose=verbose)
        compile_for(model, head_learning_rate)  # So that `evaluate` works as usual.
    else:
        if feature_cache:
            logger.info("feature cache not used: %s", why_not)
        result = FineTuneHistory(head=run(head_epochs, head_learning_rate))
    if fine_tune_epochs <= 0 or set_trainable(model, unfreeze) == 0:
        return result
    head_weights = model.get_weights()
    schedule = _warmup_cosine(fine_tune_learning_rate, warmup_epochs,
                              fine_tune_epochs, _steps_per_epoch(train))
    result.fine_tune = run(fine_tune_epochs, schedule, initial_epoch=result.head_epochs)
    result.kept_phase = "fine_tune"
    if _best(result.fine_tune, monitor) > _best(result.head, monitor):
        model.set_weights(head_weights)
        result.kept_phase = "head"
    return result


def balanced_class_weight(train, num_classes):
    """Returns `{label: total / (num_classes * count)}` for a training set.

    Args:
        train: `(images, labels)` batches; one pass is made over the labels.
        num_classes: The number of classes.

    Returns:
        A dict for `model.fit(class_weight=...)`, or `None` when the
        classes are balanced (every weight would be 1).

    Example:
    >>> balanced_class_weight(train, 3)
    {0: 0.5, 1: 1.5, 2: 1.5}
    """
    from tftransfer.data import class_counts

    counts = class_counts(train, num_classes)
    if counts.min() == counts.max():
        return None
    weights = {label: float(counts.sum() / (num_classes * count)) if count else 0.0
               for label, count in enumerate(counts)}
    logger.info("class weights for imbalanced data (counts %s): %s", counts.tolist(),
                {k: round(v, 3) for k, v in weights.items()})
    return weights


def _why_not_cached(model, train, feature_cache, views):
    """Returns why phase 1 cannot use cached features, or `None` if it can."""
    if not feature_cache:
        return "disabled"
    spec = getattr(train, "element_spec", None)
    if not isinstance(spec, tuple) or len(spec) != 2:
        return "the training data is not a tf.data.Dataset of (images, labels)"
    if augmentation_of(model) is not None and not views:
        return ("random augmentation makes every epoch's images new; pass "
                "augmented_views=K (--augmented-views K) to cache K views per image")
    return None


def _fit_head_on_cache(model, train, validation, *, compile_for, epochs, learning_rate,
                       callbacks, cache_dir, views, class_weight, seed, verbose):
    from tftransfer.feature_cache import cached_features

    features = model.get_layer("features")
    augmentation = augmentation_of(model) if views else None
    head_train, manifest = cached_features(
        features, train, cache_dir=cache_dir, augmentation=augmentation,
        views=max(1, views), shuffle=True, seed=seed)
    head_validation = None
    if validation is not None:
        head_validation, _ = cached_features(features, validation, cache_dir=cache_dir)
    head = head_of(model)
    compile_for(head, learning_rate)
    history = head.fit(head_train, validation_data=head_validation, epochs=epochs,
                       callbacks=callbacks, class_weight=class_weight, shuffle=False,
                       verbose=verbose)
    return FineTuneHistory(head=history, feature_cache=manifest)


def _best(history, monitor):
    values = [v for v in history.history.get(monitor, []) if math.isfinite(v)]
    return min(values, default=math.inf)


def _steps_per_epoch(dataset):
    steps = int(dataset.cardinality()) if hasattr(dataset, "cardinality") else -1
    return steps if steps > 0 else None


def _warmup_cosine(peak, warmup_epochs, epochs, steps_per_epoch):
    if steps_per_epoch is None:
        return peak  # An unknown length: keep the rate constant.
    warmup = min(warmup_epochs, epochs) * steps_per_epoch
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(peak, epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 10, warmup_target=peak, warmup_steps=warmup,
        decay_steps=max(1, epochs * steps_per_epoch - warmup))
