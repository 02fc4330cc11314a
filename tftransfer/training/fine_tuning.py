"""The two-phase routine: train the new head, then fine-tune the top layers.

`fine_tune` resolves its arguments into a `Plan` (`tftransfer.training.plan`), then
runs it: the head phase trains only the head at a normal learning rate,
the base frozen; the top phase unfreezes the top of the base and goes on at
a learning rate 10x lower, warmed up and cosine-decayed, so that the large
gradients of a fresh head never wreck the pretrained features; then the
better of the two phases' weights is kept. Each phase is a `Phase`.
"""

import contextlib
import dataclasses
import logging
from typing import Optional, Union

import keras
import numpy as np
import tensorflow as tf

from tftransfer.defaults import NO_UNFREEZE
from tftransfer.models.builder import augmentation_of, head_of, set_trainable
from tftransfer.models.inference import inference, predictions
from tftransfer.models.losses import loss_and_metrics
from tftransfer.models.multi_label import choose_thresholds, set_thresholds
from tftransfer.progress import EpochLine, no_bars, verbosity
from tftransfer.training.backups import PhaseBackups
from tftransfer.training.cached_inputs import cached_inputs
from tftransfer.training.distribute import fit, learning_rate_scale
from tftransfer.training.evidence import Evidence, measure_evidence
from tftransfer.training.feature_cache import read_rows
from tftransfer.training.history import FineTuneHistory
from tftransfer.training.keep import average_weights, choose_kept, multi_label_kept, top_lost
from tftransfer.training.lr_finder import find_learning_rate
from tftransfer.training.phases import HEAD, TOP, Phase, kept_epochs
from tftransfer.training.plan import DISABLED, Plan, RunOptions, plan_fine_tune

logger = logging.getLogger("tftransfer")


#: Steps per call of the training function in the cached phases: a step of the
#: head on cached features is so cheap that Keras's per-call work would be most
#: of an epoch (docs/benchmarks.md#feature-cache); the top phase's steps cost
#: more, and 8 keeps its progress bar moving.
CACHED_STEPS_PER_EXECUTION = {"head": 64, "refit": 64, "top": 8}


def fine_tune(model: keras.Model, train: tf.data.Dataset,
              validation_data: Optional[tf.data.Dataset] = None, *,
              head: Phase = HEAD, top: Phase = TOP,
              class_weight: Union[str, dict, None] = "auto",
              label_smoothing: float = 0.0,
              augmented_views: Union[str, int] = "auto",
              refit: Union[str, bool] = "auto",
              callbacks: Optional[list] = None,
              verbose: Union[str, int] = "auto",
              options: Optional[RunOptions] = None) -> FineTuneHistory:
    """Trains a classifier in two phases: the head, then the unfrozen top.

    Resolves the arguments first (`plan_fine_tune`; `tftransfer train
    --dry-run` prints that plan), then runs it. The head phase stops early
    and keeps its best weights; the top phase runs all its epochs (see
    `Phase.patience`). If the top phase ends clearly less accurate on the
    validation data than the head phase, the head phase's weights are kept
    (see `FineTuneHistory.kept_phase`). A multi-label model then has its
    per-label thresholds chosen on the validation data.

    Args:
        model: A classifier from `build_classifier`, built under the
            strategy it will train under.
        train: A finite `tf.data.Dataset` of `(images, labels)` batches.
        validation_data: Batches to monitor for early stopping (else the
            training loss is monitored).
        head: The head phase, a `Phase` whose `unfreeze` is `"none"`.
        top: The top phase, a `Phase`; `epochs=0` or `unfreeze="none"`
            skips it.
        class_weight: `"auto"` weighs each class by `total / (classes *
            count)`, so that imbalanced classes count equally (all 1.0 on
            balanced data); a `{label: weight}` dict; or `None`. For a
            multi-label model the weights are those of each label's
            positives in the loss; `"auto"`: `multi_label.positive_weights`.
        label_smoothing: Label smoothing of the cross-entropy.
        augmented_views: With a classifier that has random augmentation
            (see `build_classifier`), cache this many augmented views of
            each image for both phases; 0 runs both phases uncached, with
            fresh augmentation every epoch. `"auto"` (see `auto.auto_views`):
            when the smallest class has fewer than 12 training images
            (`auto.AUGMENT_BELOW`), where augmentation pays, enough views
            for about 48 rows in it (at most 8); with more, the cached
            phases see the images unaugmented, which was as accurate or
            more, and faster.
        refit: When the top phase does not run, train the head a second
            time, from its initial weights, on the training and validation
            data together, for the number of epochs that early stopping
            picked on validation. The validation data is then no longer held
            out: judge the model on a test split. `"auto"`: when the
            smallest class has fewer than 30 training images
            (`auto.REFIT_BELOW`), where the held-out fifth is a loss worth
            having back.
        callbacks: Keras callbacks, used in both phases (a
            `keras.callbacks.TensorBoard` among them logs both). While a
            phase runs on cached inputs, their `model` is the part that
            trains: the head in the head phase, `boundary.Split.trainer` in
            the top phase.
        verbose: `1`: Keras progress bars; `2`: one line per epoch (an
            `EpochLine`, for log files); `0`: silent; `"auto"`: 1 when
            standard output is a terminal, else 2.
        options: A `RunOptions`: the feature cache, the seed, XLA,
            learning-rate scaling with the replicas, and backups for
            resuming after a crash.

    Returns:
        A `FineTuneHistory`.
    """
    options = options or RunOptions()
    plan = plan_fine_tune(model, train, validation_data, head=head, top=top,
                          class_weight=class_weight, label_smoothing=label_smoothing,
                          augmented_views=augmented_views, refit=refit, options=options)
    return run_plan(model, plan, train, validation_data, callbacks=callbacks,
                    verbose=verbose)


def run_plan(model: keras.Model, plan: Plan, train: tf.data.Dataset,
             validation_data: Optional[tf.data.Dataset] = None, *,
             callbacks: Optional[list] = None,
             verbose: Union[str, int] = "auto") -> FineTuneHistory:
    """Runs a `Plan` that `plan_fine_tune` made: the head, the top, the better kept.

    `fine_tune` is `plan_fine_tune` then `run_plan`; call them apart to use
    the plan first (print it, record the data's identity) without reading
    the data a second time.

    Args:
        model, train, validation_data: As given to `plan_fine_tune`.
        plan: The `Plan`.
        callbacks, verbose: As in `fine_tune`. Everything else (the cache,
            the seed, devices, backups) comes from the plan, which holds
            the `RunOptions` it was made with.

    Returns:
        A `FineTuneHistory`.
    """
    runner = _PhaseRunner(model, plan, callbacks, verbose, validation_data is not None)
    with contextlib.closing(runner):  # Frees the backup folder however the run ends.
        result = _resumed_head(model, plan, runner) or _train_head(
            model, plan, train, validation_data, runner)
        plan = result.plan
        if plan.top.runs:
            head_weights = model.get_weights()
            scored = _train_top(model, plan, train, validation_data, runner, result)
            # A top phase resumed after its last epoch has no history; its weights stay.
            if result.top.epoch:
                _keep(model, plan, runner, result, head_weights, *scored)
        if plan.multi_label and validation_data is not None:
            result.thresholds = tune_thresholds(model, validation_data)
        if runner.backup:
            runner.backup.remove(model)
    return result


class _PhaseRunner:
    """What both phases share: the loss, the callbacks, the backups, the device options."""

    def __init__(self, model, plan, callbacks, verbose, validated):
        options = plan.options
        self.strategy = model.distribute_strategy
        self.options = options
        self.callbacks = list(callbacks or [])
        # Keras's class_weight takes one label per example; multi-label weights go in the loss.
        self.class_weight = None if plan.multi_label else plan.class_weight
        self.plan = plan
        self.loss, _ = loss_and_metrics(plan.multi_label, plan.class_weight,
                                        plan.label_smoothing)
        self.verbose = verbose
        self.monitor = "val_loss" if validated else "loss"
        self.scale = learning_rate_scale(self.strategy.num_replicas_in_sync,
                                         options.learning_rate_scaling)
        if self.scale != 1.0:
            logger.info("learning rates x%.3g for %d replicas (%s rule)", self.scale,
                        self.strategy.num_replicas_in_sync, options.learning_rate_scaling)
        self.backup = PhaseBackups(options.backup_dir, run=plan.identity()) \
            if options.backup_dir else None
        if self.backup is not None:
            self.backup.hold(self.strategy)

    def close(self):
        if self.backup is not None:
            self.backup.release()

    def compile(self, target, phase, steps_per_epoch=None, steps_per_execution=1):
        rate = phase.schedule(phase.learning_rate * self.scale, steps_per_epoch)
        with self.strategy.scope():
            # New metric objects for each compile, as Keras asks.
            _, metrics = loss_and_metrics(self.plan.multi_label)
            target.compile(optimizer=keras.optimizers.Adam(rate), loss=self.loss,
                           metrics=metrics, jit_compile=self.options.jit_compile,
                           steps_per_execution=steps_per_execution)

    def run(self, name, target, phase, data, validation_data, initial_epoch=0,
            cached=False):
        """Compiles `target` for `phase` and fits it.

        A `cached` phase on one replica runs `CACHED_STEPS_PER_EXECUTION[name]`
        steps per call. Without validation data for a validated run (the
        refit), the phase runs all its epochs, with no early stopping.

        Returns:
            The `History`.
        """
        steps = _steps_per_epoch(data)
        # Several replicas run one step a call: Keras's multi-step loop fails
        # under MirroredStrategy (docs/scale.md), and their steps are the
        # heavier ones anyway.
        several = cached and self.strategy.num_replicas_in_sync == 1
        self.compile(target, phase, steps,
                     min(CACHED_STEPS_PER_EXECUTION[name], steps or 1) if several else 1)
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
                logger.info("resuming the %s phase after epoch %d, from %s", name, restored,
                            saver.directory)
                initial_epoch = restored
            callbacks.append(saver)
        verbose = verbosity(self.verbose)
        if verbose == 2:
            callbacks.append(EpochLine(name))
            verbose = 0
        return fit(target, data, validation_data=validation_data, epochs=epochs,
                   initial_epoch=initial_epoch, callbacks=callbacks,
                   class_weight=self.class_weight, verbose=verbose)


def _resumed_head(model, plan, runner):
    """The head phase's result from the backups, restored into `model`, or `None`."""
    finished = runner.backup.finished_head(model) if runner.backup else None
    if not finished:
        return None
    history, cache, decided = finished
    result = FineTuneHistory(head=history, head_cache=cache, plan=plan)
    if decided:
        result.evidence = Evidence(**decided["evidence"]) if decided["evidence"] else None
        result.plan, decision = plan.after_evidence(result.evidence)
        logger.info("%s (as before the resume)", decision)
        result.decisions.append(decision)
    return result


def _train_head(model, plan, train, validation_data, runner):
    """The head phase: the head on cached features if possible, else the whole model.

    When the top phase is cached too, the features come from its cached
    activations at the cut (`plan.split`), so that the base runs once.
    """
    set_trainable(model, NO_UNFREEZE)  # The head alone, whatever the model came with.
    initial = head_of(model).get_weights()
    phase = plan.head.phase
    decided = None
    if not plan.head.cached:
        if plan.head.why_not_cached != DISABLED:
            logger.info("feature cache not used: %s", plan.head.why_not_cached)
        result = FineTuneHistory(head=runner.run("head", model, phase, train, validation_data),
                                 head_learning_rate=phase.learning_rate)
        if plan.refit:
            result.refit = _refit(runner, model, phase, result, initial,
                                  train.concatenate(validation_data), cached=False)
    else:
        frozen = plan.split.top_features if plan.split else model.get_layer("features")
        inputs = _extract(runner, model, frozen, train, validation_data, plan,
                          join_validation=plan.refit or plan.refit_without_top,
                          below=plan.split)
        evidence, decided = _weigh_evidence(plan, inputs)
        history, search = _fit_cached(runner, "head", phase, head_of(model), inputs)
        result = FineTuneHistory(head=history, head_cache=inputs.manifest,
                                 rate_search=search,
                                 head_learning_rate=search.rate if search else
                                 phase.learning_rate, evidence=evidence)
        if decided is not None:
            plan, decision = plan.after_evidence(evidence)
            logger.info("%s", decision)
            result.decisions.append(decision)
        if plan.refit:
            result.refit = _refit(runner, head_of(model), phase, result, initial,
                                  inputs.joined, cached=True)
    result.plan = plan
    # So that `model.evaluate` works.
    runner.compile(model, dataclasses.replace(phase, learning_rate=result.head_learning_rate))
    if runner.backup:
        runner.backup.save_head(model, result.head, result.head_cache,
                                decided=decided)
    return result


def _weigh_evidence(plan, inputs):
    """Measures the evidence of the cached features, if a decision waits for it.

    Pools the training and validation images' features; with augmented
    views, only the first view of each training image, so that no held-out
    image has a copy in the training folds.

    Returns:
        `(evidence, decided)`: the `Evidence` (or `None`), and what to keep
        in the backups so that a resumed run decides alike (`None` if
        nothing waited).
    """
    if not plan.waits:
        return None, None
    manifest = inputs.manifest
    features, labels = read_rows(manifest, manifest["rows"] // max(1, manifest.get("views", 1)))
    if inputs.validation_manifest is not None:
        more, more_labels = read_rows(inputs.validation_manifest)
        features, labels = np.concatenate([features, more]), np.concatenate([labels, more_labels])
    evidence = measure_evidence(features, labels, len(plan.train.counts), seed=plan.seed or 0)
    if evidence is not None:
        logger.info("evidence: %s", evidence.describe())
    return evidence, {"evidence": evidence.to_dict() if evidence else None}


def _refit(runner, target, phase, result, initial, data, cached):
    """Trains `target` again on `data` for the head phase's best epoch count.

    The head (`target` or a part of it) starts again from `initial`.
    """
    epochs = kept_epochs(result.head, phase, runner.monitor)
    logger.info("refit: the head again, on the training and validation data, for %d "
                "epoch(s)", epochs)
    head = target if cached else head_of(target)
    head.set_weights(initial)
    phase = dataclasses.replace(phase, epochs=epochs, learning_rate=result.head_learning_rate)
    return runner.run("refit", target, phase, data, None, cached=cached)


def _train_top(model, plan, train, validation_data, runner, result):
    """The top phase: the unfrozen top on cached boundary activations if possible.

    Fills in `result`'s `top`, `top_cache`, `unfrozen` and `kept_phase`.

    Returns:
        `(target, validation)`: what scores the validation images under
        the model's weights (the trainer and its cached validation inputs,
        or the model and the validation data).
    """
    part = plan.top
    set_trainable(model, part.phase.unfreeze)
    result.unfrozen = part.phase.unfreeze
    result.kept_phase = "top"
    if not part.cached:
        if part.why_not_cached != DISABLED:
            logger.info("top phase cache not used: %s", part.why_not_cached)
        result.top = runner.run("top", model, part.phase, train, validation_data,
                                initial_epoch=result.head_epochs)
        return model, validation_data
    logger.info("top phase cache: %d tensor(s) cross the cut below the top %d layer(s)",
                plan.split.crossing, part.phase.unfreeze)
    inputs = _extract(runner, model, plan.split.bottom, train, validation_data, plan)
    result.top, _ = _fit_cached(runner, "top", part.phase, plan.split.trainer, inputs,
                                initial_epoch=result.head_epochs)
    result.top_cache = inputs.manifest
    return plan.split.trainer, inputs.validation


def _keep(model, plan, runner, result, head_weights, target, validation):
    """Keeps the head phase's weights, the top phase's, or their average (`plan.keep`).

    With validation data the candidates are scored on the same validation
    images (`keep.choose_kept`; a multi-label model's by their exact mAP,
    `keep.multi_label_kept`); without, the top phase's weights give way to
    the head's only when its training loss is higher (`keep.top_lost`).
    """
    if validation is None:
        if top_lost(result.head, result.top, plan, runner.monitor):
            model.set_weights(head_weights)
            result.kept_phase = "head"
        result.decisions.append(f"kept the {result.kept_phase} phase's weights "
                                f"({plan.keep})")
        return
    if top_lost(result.head, result.top, plan, "loss"):
        # Fine-tuning fits its training images better than the head alone;
        # a higher training loss means it diverged, whatever a few images say.
        model.set_weights(head_weights)
        result.kept_phase = "head"
        result.decisions.append("kept the head phase's weights: the top phase ended with a "
                                "higher training loss (it diverged)")
        logger.info("%s", result.decisions[-1])
        return
    top_weights = model.get_weights()
    candidates = {"head": head_weights, "top": top_weights}
    if not plan.multi_label:
        candidates["average"] = average_weights(head_weights, top_weights)
    probabilities = {}
    call = inference(target)  # One trace: the candidates differ only in variable values.
    for name, weights in candidates.items():
        model.set_weights(weights)
        labels, probabilities[name] = predictions(call, validation)
    result.kept_phase, reason = (multi_label_kept(labels, **probabilities) if plan.multi_label
                                 else choose_kept(labels, probabilities))
    model.set_weights(candidates[result.kept_phase])
    logger.info("%s", reason)
    result.decisions.append(reason)


def _extract(runner, model, frozen, train, validation_data, plan, *, join_validation=False,
             below=None):
    """What `frozen` computes from the data, cached once (`cached_inputs`)."""
    bars = contextlib.nullcontext() if runner.verbose in (1, "auto") else no_bars()
    with bars:
        return cached_inputs(frozen, train, validation_data, plan,
                             augmentation=augmentation_of(model),
                             join_validation=join_validation, below=below)


def _fit_cached(runner, name, phase, target, inputs, *, initial_epoch=0):
    """Runs a phase of `target` on cached inputs.

    Returns:
        `(history, search)`: the phase's `History`, and the `RateSearch` if
        the rate was `"auto"`.
    """
    search = None
    if phase.learning_rate == "auto":
        search = find_learning_rate(target, inputs.train, loss=runner.loss)
        logger.info("%s learning rate: %.3g, from a range test (lowest loss at %.3g)",
                    name, search.rate, search.lowest)
        phase = dataclasses.replace(phase, learning_rate=search.rate)
    history = runner.run(name, target, phase, inputs.train, inputs.validation,
                         initial_epoch=initial_epoch, cached=True)
    return history, search


def tune_thresholds(model: keras.Model, validation_data: tf.data.Dataset) -> list:
    """Chooses and sets a multi-label model's thresholds on held-out data.

    Args:
        model: A classifier from `build_classifier(..., multi_label=True)`.
        validation_data: `(images, multi-hot labels)` batches it did not
            train on.

    Returns:
        The thresholds (`multi_label.choose_thresholds`), one per label, as
        set in the model.
    """
    labels, probabilities = predictions(inference(model), validation_data)
    thresholds = choose_thresholds(labels, probabilities)
    set_thresholds(model, thresholds)
    logger.info("per-label thresholds for the best F1 on the validation data: %s",
                [round(float(t), 3) for t in thresholds])
    return thresholds.tolist()


def _steps_per_epoch(dataset):
    steps = int(dataset.cardinality()) if hasattr(dataset, "cardinality") else -1
    return steps if steps > 0 else None
