"""The two-phase routine: train the new head, then fine-tune the top layers.

Phase 1 trains only the head at a normal learning rate; the base is frozen.
Phase 2 unfreezes the top of the base and goes on at a learning rate about
100x lower, warmed up and cosine-decayed, so that the large gradients of a
fresh head never wreck the pretrained features. Both phases stop early and
keep their best weights; if phase 2 never beats phase 1, phase 1's weights
are kept.
"""

import dataclasses
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import keras
import numpy as np
from keras import ops

from tftransfer.builder import augmentation_of, head_of, set_trainable
from tftransfer.distribute import (EpochBackup, fit, is_chief, is_multi_worker,
                                   learning_rate_scale, replace_atomically)
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
        """The number of epochs phase 1 ran (counting those before a resume)."""
        return self.head.epoch[-1] + 1 if self.head.epoch else 0


def fine_tune(model, train, validation=None, *, head_epochs=50, fine_tune_epochs=20,
              unfreeze=20, head_learning_rate=1e-3, fine_tune_learning_rate=1e-5,
              warmup_epochs=1, patience=5, label_smoothing=0.0, class_weight="auto",
              callbacks=None, log_dir=None, feature_cache=True, augmented_views=0,
              seed=None, backup_dir=None, learning_rate_scaling="sqrt",
              jit_compile="auto", verbose="auto"):
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
        backup_dir: If set, each epoch of both phases is backed up there
            (weights and optimizer state), and a call with the same folder
            after a crash or preemption resumes where the last one stopped,
            in the right phase. Removed once training ends. With several
            workers it must be on storage that all of them share.
        learning_rate_scaling: The learning rates are for one replica's
            batch; with N replicas in sync they are multiplied by sqrt(N)
            (`"sqrt"`, suited to Adam), N (`"linear"`), or not (`None`).
        jit_compile: XLA compilation of the training step: `True`,
            `False`, or `"auto"` (Keras' choice: on for GPUs and TPUs).
        verbose: `1`: Keras progress bars; `2`: one line per epoch (an
            `EpochLine`, for log files); `0`: silent; `"auto"`: 1 when
            standard output is a terminal, else 2.

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
    strategy = model.distribute_strategy
    scale = learning_rate_scale(strategy.num_replicas_in_sync, learning_rate_scaling)
    if scale != 1.0:
        logger.info("learning rates x%.3g for %d replicas (%s rule): head %.3g, "
                    "fine-tune %.3g", scale, strategy.num_replicas_in_sync,
                    learning_rate_scaling, head_learning_rate * scale,
                    fine_tune_learning_rate * scale)
    backup = _PhaseBackups(backup_dir) if backup_dir else None

    def early_stopping():
        return keras.callbacks.EarlyStopping(monitor, patience=patience,
                                             restore_best_weights=True)

    def compile_for(target, learning_rate):
        with strategy.scope():
            target.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                           metrics=["accuracy"], jit_compile=jit_compile)

    def run(phase, target, data, validation_data, epochs, learning_rate, initial_epoch=0):
        compile_for(target, learning_rate)
        phase_callbacks = [early_stopping(), *extra]
        if backup is not None:
            saver = backup.for_phase(phase)
            restored = saver.restore(target)
            if restored > initial_epoch:
                logger.info("resuming phase %r after epoch %d, from %s", phase, restored,
                            saver.directory)
                initial_epoch = restored
            phase_callbacks.append(saver)
        fit_verbose = verbose
        if verbose == "auto":
            fit_verbose = 1 if sys.stdout.isatty() else 2
        if fit_verbose == 2:
            phase_callbacks.append(EpochLine(phase))
            fit_verbose = 0
        return fit(target, data, validation_data=validation_data, epochs=epochs,
                   initial_epoch=initial_epoch, callbacks=phase_callbacks,
                   class_weight=class_weight, verbose=fit_verbose)

    if isinstance(class_weight, str):
        if class_weight != "auto":
            raise TransferError(f"class_weight must be 'auto', a dict or None, got "
                                f"{class_weight!r}")
        class_weight = balanced_class_weight(train, int(model.output_shape[-1]))
    if fine_tune_epochs > 0:
        set_trainable(model, unfreeze)  # Fails now, not after phase 1, if invalid.
    set_trainable(model, "none")
    result = backup.finished_head(model) if backup else None
    if result is None:
        result = _train_head(model, train, validation, run=run, epochs=head_epochs,
                             learning_rate=head_learning_rate * scale,
                             feature_cache=feature_cache, views=augmented_views,
                             seed=seed)
        compile_for(model, head_learning_rate * scale)  # So that `evaluate` works.
        if backup:
            backup.save_head(model, result)
    if fine_tune_epochs <= 0 or set_trainable(model, unfreeze) == 0:
        if backup:
            backup.remove(model)
        return result
    head_weights = model.get_weights()
    schedule = _warmup_cosine(fine_tune_learning_rate * scale, warmup_epochs,
                              fine_tune_epochs, _steps_per_epoch(train))
    result.fine_tune = run("fine_tune", model, train, validation,
                           result.head_epochs + fine_tune_epochs, schedule,
                           initial_epoch=result.head_epochs)
    result.kept_phase = "fine_tune"
    # A phase 2 resumed after its last epoch has no history; its weights stay.
    if result.fine_tune.epoch and _best(result.fine_tune, monitor) > _best(result.head,
                                                                           monitor):
        model.set_weights(head_weights)
        result.kept_phase = "head"
    if backup:
        backup.remove(model)
    return result


def _train_head(model, train, validation, *, run, epochs, learning_rate, feature_cache,
                views, seed):
    """Phase 1: the head on cached features if possible, else the whole model."""
    why_not = _why_not_cached(model, train, feature_cache, views)
    if why_not is not None:
        if feature_cache:
            logger.info("feature cache not used: %s", why_not)
        return FineTuneHistory(head=run("head", model, train, validation, epochs,
                                        learning_rate))
    from tftransfer.feature_cache import cached_features

    cache_dir = None if feature_cache is True else feature_cache
    features = model.get_layer("features")
    augmentation = augmentation_of(model) if views else None
    if seed is None and is_multi_worker(model.distribute_strategy):
        seed = 0  # Every worker must shuffle alike, or their shares would overlap.
    head_train, manifest = cached_features(
        features, train, cache_dir=cache_dir, augmentation=augmentation,
        views=max(1, views), shuffle=True, seed=seed)
    head_validation = None
    if validation is not None:
        head_validation, _ = cached_features(features, validation, cache_dir=cache_dir)
    history = run("head", head_of(model), head_train, head_validation, epochs,
                  learning_rate)
    return FineTuneHistory(head=history, feature_cache=manifest)


class EpochLine(keras.callbacks.Callback):
    """Prints one line per epoch, for logs where progress bars would be noise.

    Keras' `verbose=2` prints two lines per epoch (`Epoch 3/50`, then the
    metrics); a log file wants one:
    `head epoch 3/50 - 0.4s - accuracy: 0.8125 - loss: 0.5120 - val_...`.

    Args:
        phase: The phase's name, at the start of each line.
        stream: Where the lines go (default: standard output).
    """

    def __init__(self, phase, stream=None):
        super().__init__()
        self.phase = phase
        self.stream = stream
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = " - ".join(f"{name}: {float(value):.4f}"
                             for name, value in sorted((logs or {}).items())
                             if name != "learning_rate")
        epochs = self.params.get("epochs") if self.params else None
        print(f"{self.phase} epoch {epoch + 1}/{epochs} - "
              f"{time.perf_counter() - self._started:.1f}s - {metrics}",
              file=self.stream or sys.stdout, flush=True)


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


class _PhaseBackups:
    """The backups of one `fine_tune` run, for resuming it in the right phase.

    `DIR/head/` and `DIR/fine_tune/` hold each phase's epoch backups
    (`EpochBackup`); once phase 1 ends, its result (the weights that it
    kept, and its history) is saved as `DIR/head.npz` + `DIR/head.json`, so
    that a restart goes straight to phase 2.
    """

    def __init__(self, directory):
        self.directory = Path(directory)

    def for_phase(self, phase):
        return EpochBackup(self.directory / phase)

    def finished_head(self, model):
        """Restores a finished phase 1 into `model`; `None` if it did not finish."""
        try:
            state = json.loads((self.directory / "head.json").read_text())
            with np.load(self.directory / "head.npz") as arrays:
                weights = [arrays[f"w{i}"] for i in range(len(arrays.files))]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as error:
            raise TransferError(f"cannot read the backup of phase 1 in {self.directory}: "
                                f"{error}") from None
        try:
            model.set_weights(weights)
        except ValueError as error:
            raise TransferError(f"the backup in {self.directory} is from another model "
                                f"({error}); delete it or choose another backup "
                                "folder") from None
        history = keras.callbacks.History()
        history.history = state["history"]
        history.epoch = state["epoch"]
        logger.info("resuming: phase 1 (head) finished earlier after %d epochs; its "
                    "weights are restored from %s", state["epochs"], self.directory)
        return FineTuneHistory(head=history, feature_cache=state.get("feature_cache"))

    def save_head(self, model, result):
        if not is_chief(model.distribute_strategy):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
        replace_atomically(self.directory / "head.npz",
                           lambda path: np.savez(path, **weights))
        state = json.dumps({"epochs": result.head_epochs, "epoch": result.head.epoch,
                            "history": result.head.history,
                            "feature_cache": result.feature_cache}, default=float)
        replace_atomically(self.directory / "head.json",
                           lambda path: path.write_text(state))
        shutil.rmtree(self.directory / "head", ignore_errors=True)

    def remove(self, model):
        if is_chief(model.distribute_strategy):
            shutil.rmtree(self.directory, ignore_errors=True)


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
