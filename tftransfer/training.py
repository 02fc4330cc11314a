"""The two-phase routine: train the new head, then fine-tune the top layers.

Phase 1 trains only the head at a normal learning rate; the base is frozen.
Phase 2 unfreezes the top of the base and goes on at a learning rate 10x
lower, warmed up and cosine-decayed, so that the large gradients of a
fresh head never wreck the pretrained features. Each phase is a `Phase`.
"""

import contextlib
import dataclasses
import logging
import math
import sys
from typing import Optional

import keras

from tftransfer import auto
from tftransfer.builder import head_of, set_trainable
from tftransfer.data import class_counts
from tftransfer.distribute import (PhaseBackups, RunOptions, fit, is_multi_worker,
                                   learning_rate_scale)
from tftransfer.cached_inputs import (boundary_split, cached_inputs, cached_spec,
                                      why_not_cached)
from tftransfer.errors import TransferError
from tftransfer.losses import SparseCategoricalCrossentropy
from tftransfer.lr_finder import RateSearch, find_learning_rate
from tftransfer.phases import (FINE_TUNE, HEAD, finite_or_inf, kept_epoch_logs,
                                kept_epochs)
from tftransfer.progress import EpochLine, no_bars
from tftransfer.trace_ahead import TraceAhead

logger = logging.getLogger("tftransfer")


#: Steps per call of the training function in the cached phases, by phase.
#: A step of the head on cached features is so cheap that Keras' per-call
#: work (a Python round trip, callbacks) was most of an epoch: 64 steps a
#: call ran ten head epochs on 2,000 rows in 1.8 s, against 2.0 s with 8
#: and 3.0 s with 1 (docs/benchmarks.md). Keras loops over the steps in the
#: graph, so a longer call costs no longer a trace. Phase 2's steps run
#: layers of the base and take long enough on their own; 8 keeps its
#: progress bar moving.
CACHED_STEPS_PER_EXECUTION = {"head": 64, "refit": 64, "fine_tune": 8}
#: The head's rate when `"auto"` cannot run its range test (no cached features).
FALLBACK_HEAD_RATE = 1e-3


@dataclasses.dataclass
class FineTuneHistory:
    """The Keras `History` of each phase.

    Attributes:
        head: Phase 1 (the head alone).
        fine_tune: Phase 2 (the unfrozen top), or `None` if it did not run.
        kept_phase: `"head"` if phase 2 ended clearly less accurate on
            validation than phase 1 (by more than the standard error of
            phase 1's accuracy; without validation data: with a higher
            training loss) and phase 1's weights were restored, else
            `"fine_tune"`.
        feature_cache: The manifest of the cached training features used
            by phase 1 (see `cached_features`), or `None`.
        fine_tune_cache: The manifest of the cached activations at the
            unfreeze boundary used by phase 2, or `None`.
        head_learning_rate: Phase 1's learning rate (the one picked, with
            `"auto"`).
        rate_search: With a head rate of `"auto"`, the range test's
            `lr_finder.RateSearch`.
        unfrozen: The backbone layers (or a hub module's variables) that
            phase 2 trained; 0 if it did not run.
        refit: With `refit`, the `History` of the head's second training,
            on the training and validation data together (no validation
            metrics; not part of `history`), else `None`.
    """

    head: keras.callbacks.History
    fine_tune: Optional[keras.callbacks.History] = None
    kept_phase: str = "head"
    feature_cache: Optional[dict] = None
    fine_tune_cache: Optional[dict] = None
    head_learning_rate: Optional[float] = None
    rate_search: Optional[RateSearch] = None
    unfrozen: int = 0
    refit: Optional[keras.callbacks.History] = None

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


def fine_tune(model, train, validation_data=None, *, head=HEAD, fine_tune=FINE_TUNE,
              class_weight="auto", label_smoothing=0.0, feature_cache=True,
              augmented_views="auto", refit="auto", callbacks=None, seed=None,
              verbose="auto", options=None):
    """Trains a classifier in two phases: the head, then the unfrozen top.

    Phase 1 stops early and keeps its best weights; phase 2 runs all its
    epochs (see `Phase.patience`). If phase 2 ends clearly less accurate on
    the validation data than phase 1, phase 1's weights are kept (see
    `FineTuneHistory.kept_phase`).

    Args:
        model: A classifier from `build_classifier`, built under the
            strategy it will train under.
        train: A `tf.data.Dataset` of `(images, labels)` batches.
        validation_data: Batches to monitor for early stopping (else the
            training loss is monitored).
        head: Phase 1, a `Phase` whose `unfreeze` is `"none"`.
        fine_tune: Phase 2, a `Phase`; `epochs=0` or `unfreeze="none"`
            skips it.
        class_weight: `"auto"` weighs each class by `total / (classes *
            count)`, so that imbalanced classes count equally (all 1.0 on
            balanced data); a `{label: weight}` dict; or `None`.
        label_smoothing: Label smoothing of the cross-entropy.
        feature_cache: Phase 1 trains the head on features that the frozen
            base computes once, and phase 2 trains the unfrozen top on the
            activations that the frozen layers below it compute once (see
            `tftransfer.boundary`); when both run, one pass of the base
            serves both (see `tftransfer.cached_inputs`). `True` caches them
            in the default folder (see `default_cache_dir`), a path caches
            them there, `False` runs the whole model every epoch of both
            phases.
        augmented_views: With a classifier that has random augmentation
            (see `build_classifier`), cache this many augmented views of
            each image for both phases; 0 runs both phases uncached, with
            fresh augmentation every epoch. `"auto"` (see `auto.auto_views`):
            when the smallest class has fewer than 30 training images, where
            augmentation pays, enough views for about 48 rows in it (at most
            8); with more, the cached phases see the images unaugmented,
            which is as accurate and faster.
        refit: When phase 2 does not run, train the head a second time, from
            its initial weights, on the training and validation data
            together, for the number of epochs that early stopping picked
            on validation. The validation data is then no longer held out:
            judge the model on a test split. `"auto"`: when the smallest
            class has fewer than 30 training images (`auto.REFIT_BELOW`),
            where the held-out fifth is a loss worth having back.
        callbacks: Keras callbacks, used in both phases (a
            `keras.callbacks.TensorBoard` among them logs both). While a
            phase runs on cached inputs, their `model` is the part that
            trains: the head in phase 1, `boundary.Split.trainer` in phase 2.
        seed: Seeds the shuffling of cached features.
        verbose: `1`: Keras progress bars; `2`: one line per epoch (an
            `EpochLine`, for log files); `0`: silent; `"auto"`: 1 when
            standard output is a terminal, else 2.
        options: A `distribute.RunOptions`: XLA, learning-rate scaling
            with the replicas, and backups for resuming after a crash.

    Returns:
        A `FineTuneHistory`.
    """
    options = options or RunOptions()
    if head.unfreeze not in (None, "none", 0):
        raise TransferError(f"phase 1 trains the head alone; its unfreeze must be "
                            f"'none', got {head.unfreeze!r}")
    if isinstance(class_weight, str) and class_weight != "auto":
        raise TransferError(f"class_weight must be 'auto', a dict or None, got "
                            f"{class_weight!r}")
    counts = None
    if "auto" in (class_weight, fine_tune.unfreeze, augmented_views, refit):
        # One count, shared by the rules: on unregistered data it is a pass.
        counts = class_counts(train, int(model.output_shape[-1]))
    if class_weight == "auto":
        class_weight = auto.weights_for_counts(counts)
    fine_tune, augmented_views, refit = auto.resolve(model, counts, fine_tune,
                                                     augmented_views, refit)
    if refit and validation_data is None:
        logger.info("refit: skipped, as there is no validation data to pick its epochs")
        refit = False
    if refit and fine_tune.trains_backbone:
        raise TransferError("refit=True retrains the head alone, so phase 2 must not run; "
                            "pass fine_tune=Phase.fine_tune(epochs=0) or refit=False")
    runner = _PhaseRunner(model, options, callbacks, class_weight, label_smoothing,
                          verbose, validation_data is not None)
    unfrozen, split, why_not = 0, None, None
    if fine_tune.epochs > 0:
        unfrozen = set_trainable(model, fine_tune.unfreeze)  # Fails now, not after phase 1.
    if unfrozen > 0:
        # Cut before phase 1, so that one pass of the base serves both phases.
        split, why_not = boundary_split(model, train, unfrozen, feature_cache,
                                        augmented_views)
    set_trainable(model, "none")
    finished = runner.backup.finished_head(model) if runner.backup else None
    result = None
    if finished:
        result = FineTuneHistory(head=finished[0], feature_cache=finished[1])
    if result is None:
        result = _train_head(model, train, validation_data, runner, head,
                             feature_cache=feature_cache, views=augmented_views, seed=seed,
                             refit=refit, below=split)
        # So that `model.evaluate` works.
        runner.compile(model, dataclasses.replace(head, learning_rate=result.head_learning_rate))
        if runner.backup:
            runner.backup.save_head(model, result)
    if unfrozen > 0:
        set_trainable(model, fine_tune.unfreeze)
        head_weights = model.get_weights()
        result.fine_tune, result.fine_tune_cache = _train_top(
            model, train, validation_data, runner, fine_tune, unfrozen, split, why_not,
            feature_cache=feature_cache, views=augmented_views, seed=seed,
            initial_epoch=result.head_epochs)
        result.kept_phase = "fine_tune"
        result.unfrozen = unfrozen
        # A phase 2 resumed after its last epoch has no history; its weights stay.
        if result.fine_tune.epoch and _phase_two_lost(result, head, fine_tune, runner.monitor,
                                                      model, validation_data):
            model.set_weights(head_weights)
            result.kept_phase = "head"
    if runner.backup:
        runner.backup.remove(model)
    return result


class _PhaseRunner:
    """What both phases share: the loss, the callbacks, the backups, the device options."""

    def __init__(self, model, options, callbacks, class_weight, label_smoothing, verbose,
                 validated):
        self.strategy = model.distribute_strategy
        self.options = options
        self.callbacks = list(callbacks or [])
        self.class_weight = class_weight
        self.loss = SparseCategoricalCrossentropy(label_smoothing)
        self.verbose = verbose
        self.monitor = "val_loss" if validated else "loss"
        self.scale = learning_rate_scale(self.strategy.num_replicas_in_sync,
                                         options.learning_rate_scaling)
        if self.scale != 1.0:
            logger.info("learning rates x%.3g for %d replicas (%s rule)", self.scale,
                        self.strategy.num_replicas_in_sync, options.learning_rate_scaling)
        self.backup = PhaseBackups(options.backup_dir) if options.backup_dir else None

    def compile(self, target, phase, steps_per_epoch=None, steps_per_execution=1):
        rate = phase.schedule(phase.learning_rate * self.scale, steps_per_epoch)
        with self.strategy.scope():
            target.compile(optimizer=keras.optimizers.Adam(rate), loss=self.loss,
                           metrics=["accuracy"], jit_compile=self.options.jit_compile,
                           steps_per_execution=steps_per_execution)

    def compile_phase(self, name, target, phase, steps, cached=False):
        """Compiles `target` for `phase` over `steps` batches an epoch.

        A `cached` phase on one replica runs `CACHED_STEPS_PER_EXECUTION[name]`
        steps per call.
        """
        # Several replicas run one step a call: Keras 3.15's multi-step loop
        # fails under MirroredStrategy ("You must feed a value for
        # placeholder tensor"), and their steps are the heavier ones anyway.
        several = cached and self.strategy.num_replicas_in_sync == 1
        self.compile(target, phase, steps,
                     min(CACHED_STEPS_PER_EXECUTION[name], steps or 1) if several else 1)

    def run(self, name, target, phase, data, validation_data, initial_epoch=0,
            cached=False, compiled=False):
        """Compiles `target` for `phase` (unless `compiled`) and fits it.

        Without validation data for a validated run (the refit), the phase
        runs all its epochs, with no early stopping.

        Returns:
            The `History`.
        """
        if not compiled:
            self.compile_phase(name, target, phase, _steps_per_epoch(data), cached)
        callbacks = list(self.callbacks)
        if phase.patience is not None and (validation_data is not None
                                           or self.monitor == "loss"):
            callbacks.insert(0, keras.callbacks.EarlyStopping(
                self.monitor, patience=phase.patience, restore_best_weights=True))
        epochs = initial_epoch + phase.epochs
        if self.backup is not None:
            saver = self.backup.for_phase(name)
            restored = saver.restore(target)
            if restored > initial_epoch:
                logger.info("resuming phase %r after epoch %d, from %s", name, restored,
                            saver.directory)
                initial_epoch = restored
            callbacks.append(saver)
        verbose = self.verbose
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 2
        if verbose == 2:
            callbacks.append(EpochLine(name))
            verbose = 0
        return fit(target, data, validation_data=validation_data, epochs=epochs,
                   initial_epoch=initial_epoch, callbacks=callbacks,
                   class_weight=self.class_weight, verbose=verbose)


def _train_head(model, train, validation_data, runner, phase, *, feature_cache, views,
                seed, refit=False, below=None):
    """Phase 1: the head on cached features if possible, else the whole model.

    With `below` (phase 2's `boundary.Split`), the features come from the
    cached activations at phase 2's boundary.
    """
    initial = head_of(model).get_weights()
    why_not = why_not_cached(model, train, feature_cache, views)
    if why_not is not None:
        if feature_cache:
            logger.info("feature cache not used: %s", why_not)
        if phase.learning_rate == "auto":
            logger.info("head learning rate 'auto' needs cached features; using %g",
                        FALLBACK_HEAD_RATE)
            phase = dataclasses.replace(phase, learning_rate=FALLBACK_HEAD_RATE)
        result = FineTuneHistory(head=runner.run("head", model, phase, train, validation_data),
                                 head_learning_rate=phase.learning_rate)
        if refit:
            result.refit = _refit(runner, model, phase, result, initial,
                                  train.concatenate(validation_data), cached=False)
        return result
    frozen = below.top_features if below is not None else model.get_layer("features")
    history, manifest, search, joined = _run_cached(
        runner, "head", phase, model, frozen, head_of(model), train, validation_data,
        feature_cache=feature_cache, views=views, seed=seed, join_validation=refit,
        below=below)
    result = FineTuneHistory(head=history, feature_cache=manifest, rate_search=search,
                             head_learning_rate=search.rate if search else phase.learning_rate)
    if refit:
        result.refit = _refit(runner, head_of(model), phase, result, initial, joined,
                              cached=True)
    return result


def _refit(runner, target, phase, result, initial, data, cached):
    """Trains `target` again on `data` for phase 1's best epoch count.

    The head (`target` or a part of it) starts again from `initial`.
    """
    epochs = kept_epochs(result.head, phase, runner.monitor)
    logger.info("refit: the head again, on the training and validation data, for %d "
                "epoch(s)", epochs)
    head = target if cached else head_of(target)
    head.set_weights(initial)
    phase = dataclasses.replace(phase, epochs=epochs, learning_rate=result.head_learning_rate)
    return runner.run("refit", target, phase, data, None, cached=cached)


def _train_top(model, train, validation_data, runner, phase, unfrozen, split, why_not, *,
               feature_cache, views, seed, initial_epoch):
    """Phase 2: the unfrozen top on cached boundary activations if possible.

    `split` is the classifier cut at the boundary (`cached_inputs.boundary_split`),
    or `None`, and `why_not` says why it could not be cut or cached.
    """
    if split is None:
        if feature_cache:
            logger.info("phase 2 cache not used: %s", why_not)
        return runner.run("fine_tune", model, phase, train, validation_data,
                          initial_epoch=initial_epoch), None
    logger.info("phase 2 cache: %d tensor(s) cross the cut below the top %d layer(s)",
                split.crossing, unfrozen)
    history, manifest, _, _ = _run_cached(
        runner, "fine_tune", phase, model, split.bottom, split.trainer, train,
        validation_data, feature_cache=feature_cache, views=views, seed=seed,
        initial_epoch=initial_epoch)
    return history, manifest


def _run_cached(runner, name, phase, model, frozen, target, train, validation_data, *,
                feature_cache, views, seed, initial_epoch=0, join_validation=False,
                below=None):
    """Runs a phase of `target` on what `frozen` computes, cached once.

    Returns:
        `(history, manifest, search, joined)`: the phase's `History`, the
        training entry's manifest, the `RateSearch` if the rate was
        `"auto"`, and with `join_validation`, the cached training and
        validation rows as one dataset (`CachedInputs.joined`), else `None`.
    """
    if seed is None and is_multi_worker(model.distribute_strategy):
        seed = 0  # Every worker must shuffle alike, or their shares would overlap.
    bars = contextlib.nullcontext() if runner.verbose in (1, "auto") else no_bars()
    ahead, steps = _trace_ahead(runner, name, phase, target, frozen, train, validation_data,
                                views)
    with bars, ahead or contextlib.nullcontext():
        inputs = cached_inputs(frozen, train, validation_data, model=model,
                               feature_cache=feature_cache, views=views, seed=seed,
                               join_validation=join_validation, below=below)
    compiled = (ahead is not None and ahead.traced_for(inputs.train)
                and steps == _steps_per_epoch(inputs.train))
    search = None
    if phase.learning_rate == "auto":
        search = find_learning_rate(target, inputs.train, loss=runner.loss)
        logger.info("%s learning rate: %.3g, from a range test (lowest loss at %.3g)",
                    name, search.rate, search.lowest)
        phase = dataclasses.replace(phase, learning_rate=search.rate)
    history = runner.run(name, target, phase, inputs.train, inputs.validation,
                         initial_epoch=initial_epoch, cached=True, compiled=compiled)
    return history, inputs.manifest, search, inputs.joined


def _trace_ahead(runner, name, phase, target, frozen, train, validation_data, views):
    """Compiles `target` for phase 1 and starts tracing its step.

    Only where the cached batches' signature and count are known before the
    extraction: one replica, a fixed learning rate (`"auto"` runs a range
    test first), and one view, so that the cached entry has as many
    batches as `train`; and two batches or more (see `TraceAhead`).
    Elsewhere `fit` traces the step, as it always does.

    Returns:
        `(TraceAhead, steps)`: not started yet, and the batches an epoch
        that `target` was compiled for; or `(None, None)`.
    """
    steps = _steps_per_epoch(train)
    if (name != "head" or phase.learning_rate == "auto" or steps is None or steps < 2
            or (views or 1) > 1 or runner.strategy.num_replicas_in_sync != 1
            or is_multi_worker(runner.strategy)):
        return None, None
    runner.compile_phase(name, target, phase, steps, cached=True)
    return TraceAhead(target, cached_spec(frozen, train), class_weight=runner.class_weight,
                      validation=validation_data is not None), steps


def _phase_two_lost(result, head, fine_tune, monitor, model, validation_data):
    """Whether phase 2 ended clearly worse than phase 1, whose weights are then kept.

    With validation data: its validation accuracy is lower than phase 1's
    by more than the standard error of phase 1's, sqrt(p (1 - p) / n). A
    smaller gap is within what the validation images can tell: on real
    photos, gaps of a photo or two on 204 of them hid test gains of 3
    points (docs/benchmarks.md). The loss is not the measure, as it rose
    in phase 2 while the accuracy rose too. Without validation data: a
    higher training loss.
    """
    first = kept_epoch_logs(result.head, head, monitor)
    second = kept_epoch_logs(result.fine_tune, fine_tune, monitor)
    if monitor == "val_loss" and "val_accuracy" in first and "val_accuracy" in second:
        p = first["val_accuracy"]
        rows = int(class_counts(validation_data, int(model.output_shape[-1])).sum())
        return second["val_accuracy"] < p - math.sqrt(p * (1 - p) / max(rows, 1))
    return finite_or_inf(second.get(monitor)) > finite_or_inf(first.get(monitor))


def _steps_per_epoch(dataset):
    steps = int(dataset.cardinality()) if hasattr(dataset, "cardinality") else -1
    return steps if steps > 0 else None
