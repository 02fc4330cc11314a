"""`tftransfer train`: train, save, export and report, with a run record of each step."""

import os
import sys
import time
from pathlib import Path

from tftransfer.cli.inputs import base_and_data, feature_cache_option, labels_beside
from tftransfer.data.labels_file import write_labels
from tftransfer.errors import TransferError
from tftransfer.training.runs import RunRecord, claim_run_dir, data_digest, default_run_dir


def check_train_outputs(args):
    """Refuses, before any training, the outputs that `train` could not write after it."""
    from tftransfer.export.model_versions import check_export_target

    if args.save_keras and Path(args.save_keras).suffix != ".keras":
        raise TransferError(f"--save-keras must name a .keras file, not {args.save_keras}")
    if args.save_keras and Path(args.save_keras).is_dir():
        raise TransferError(f"--save-keras {args.save_keras} is a folder; name a .keras file")
    if not args.dry_run:
        check_export_target(args.export, args.model_version, args.overwrite)


def train_command(args):
    """Runs `tftransfer train`; returns the exit status."""
    import tftransfer
    from tftransfer.training import distribute

    check_train_outputs(args)

    # Multi-worker and TPU strategies set up the runtime: before any other op.
    strategy = distribute.select_strategy(args.strategy)
    distribute.select_precision(args.precision, strategy)
    base, data = base_and_data(args, strategy)
    leaks = _leaks(args)
    with strategy.scope():
        model = tftransfer.build_classifier(base, len(data.class_names),
                                            dropout=args.dropout,
                                            augmentation=args.augment,
                                            multi_label=data.multi_label)
    settings = _fine_tune_settings(args)
    plan = tftransfer.plan_fine_tune(model, data.train, data.validation, **settings)
    if args.dry_run:
        print(plan.describe())
        return 0
    record = None
    if distribute.is_chief(strategy):  # Workers sharing a disk leave it to the chief.
        record = RunRecord(args.run_dir or claim_run_dir(default_run_dir(args.data)))
        digest = data_digest(data, {"train": plan.train, "validation": plan.validation})
        record.write_config(vars(args), seed=args.seed, digest=digest)
        print(f"run: {os.path.abspath(record.folder)}")
        replayed = getattr(args, "replayed_digest", None)
        if replayed is not None and replayed != digest:
            print(f"note: the data differ from those of --config {args.config} (data "
                  f"digest {digest[:12] if digest else None}, was {replayed[:12]})")
    history = _fine_tune(model, data, args, record, plan)
    metrics = {}
    if data.test is not None:  # Every worker: under several, evaluation is collective.
        metrics = distribute.evaluate(model, data.test)
        print(f"test accuracy: {metrics['accuracy']:.4f} (loss {metrics['loss']:.4f})")
    try:
        if args.save_keras:
            _save_keras(model, Path(args.save_keras), strategy, data.class_names)
        if record is None:
            print("export: left to the chief")
            return 0
        _export_and_report(args, model, base, data, record, history, metrics, leaks)
    except BaseException:
        _keep_trained_model(model, record, data.class_names, args)
        raise
    if data.skipped:
        print(f"{len(data.skipped)} file(s) could not be used and were skipped (named "
              "above, with their reasons)")
        return 3
    return 0


def _keep_trained_model(model, record, class_names, args):
    """After a failure past training, saves the model in the run folder and says how to finish."""
    if record is None:
        return
    kept = record.folder / "model.keras"
    try:
        _save_keras(model, kept, model.distribute_strategy, class_names)
    except Exception as error:  # The failure being reported matters more than this one.
        print(f"tftransfer: could not keep the trained model in {kept}: {error}",
              file=sys.stderr)
        return
    print(f"tftransfer: the trained model is kept in {kept}; finish with: tftransfer export "
          f"--model {kept} --export {args.export}", file=sys.stderr)


def _fine_tune_settings(args):
    """The keyword arguments of `fine_tune` and `plan_fine_tune` that the flags set."""
    from tftransfer import Phase, RunOptions

    on_off = {"auto": "auto", "on": True, "off": False}
    return dict(
        head=Phase.head(epochs=args.head_epochs, learning_rate=args.head_learning_rate,
                        patience=args.head_patience),
        top=Phase.top(epochs=args.top_epochs, learning_rate=args.top_learning_rate,
                      unfreeze=args.unfreeze, warmup_epochs=args.warmup_epochs,
                      patience=args.top_patience),
        class_weight=None if args.class_weight == "none" else "auto",
        label_smoothing=args.label_smoothing, augmented_views=args.augmented_views,
        refit=on_off[args.refit],
        options=RunOptions(
            jit_compile=on_off[args.jit_compile],
            learning_rate_scaling=(None if args.learning_rate_scaling == "none"
                                   else args.learning_rate_scaling),
            backup_dir=args.backup_dir, feature_cache=feature_cache_option(args), seed=args.seed))


def _fine_tune(model, data, args, record, plan):
    """Runs the plan with TensorBoard logs in the run folder (or `--log-dir`)."""
    import keras

    from tftransfer.training.fine_tuning import run_plan

    start = time.time()
    log_dir = args.log_dir or (record.log_dir if record else None)
    callbacks = [keras.callbacks.TensorBoard(str(log_dir))] if log_dir else []
    history = run_plan(model, plan, data.train, data.validation, callbacks=callbacks,
                       verbose=2 if args.quiet else "auto")
    print(f"trained in {time.time() - start:.0f} s; kept the weights of the "
          f"'{history.kept_phase}' phase")
    return history


def _save_keras(model, save_as, strategy, class_names):
    """Saves the model, and its class names beside it (`labels_beside`)."""
    from tftransfer.training import distribute

    if not distribute.is_chief(strategy):
        # So that workers sharing a disk do not overwrite the chief's file.
        task = strategy.cluster_resolver.task_id
        save_as = save_as.with_name(f"{save_as.stem}.worker-{task}{save_as.suffix}")
    model.save(save_as)
    write_labels(labels_beside(save_as), class_names)
    print(f"saved the Keras model to {save_as}")


def _export_and_report(args, model, base, data, record, history, metrics, leaks):
    import tftransfer

    record.write_history(history)
    record.write_decisions(history)
    path = tftransfer.export_saved_model(
        model, args.export, data.class_names, version=args.model_version,
        overwrite=args.overwrite, max_pixels=args.max_pixels,
        metadata={"base": base.name, "preprocessing": base.preprocessing,
                  "test_metrics": metrics})
    print(f"exported to {os.path.abspath(path)}")
    record.add_outputs(export=os.path.abspath(path))
    page = _report_after_training(model, data, record, history, leaks)
    if page is not None:
        record.add_outputs(report=os.path.abspath(page))
        print(f"report: {os.path.abspath(page)}")


def _report_after_training(model, data, record, history, leaks=()):
    """Writes the report on the test split (else validation); returns its page or `None`."""
    from tftransfer.reports.evaluation import evaluate

    split, dataset = data.held_out()
    if dataset is None:
        print("report: none, as there is no test or validation split to evaluate on")
        return None
    report = evaluate(model, dataset, data.class_names)
    print(f"{split}: {report.summary()}")
    if split == "validation" and history.refit is not None:
        print("note: the head was refit on the validation split too, so these figures "
              "are optimistic; give the data a test/ folder to judge the model")
    elif split == "validation" and history.thresholds is not None:
        print("note: the validation split chose the per-label thresholds, so these figures "
              "are optimistic; judge the model with tftransfer evaluate on a test CSV")
    notes = [_leak_note(leaks)] if leaks else []
    return report.save(record.report_dir, history=history, notes=notes,
                       title=f"{record.folder.name}: the {split} split")


def _leaks(args):
    """Byte copies of training photos in the held-out splits of a `--data` folder."""
    from tftransfer.reports.data_audit import exact_leaks

    if not Path(args.data).is_dir():
        return []
    leaks = exact_leaks(args.data)
    if leaks:
        print(f"warning: {_leak_note(leaks)}")
    return leaks


def _leak_note(leaks):
    return (f"{len(leaks)} held-out photo(s) are copies of training photos (e.g. "
            f"{leaks[0][0]} = {leaks[0][1]}), which inflates the held-out accuracy; "
            "tftransfer audit lists them, near copies too")
