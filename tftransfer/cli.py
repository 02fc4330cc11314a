"""The `tftransfer` command line.

    tftransfer train                 # the bundled demo, no download needed
    tftransfer train --data photos/ --base efficientnet_v2_b0 --export exports/photos
    tftransfer export --model photos.keras --output exports/photos --data photos/ --tflite all
    tftransfer predict --model exports/photos cat.jpg dog.png
    tftransfer check-data photos/
    tftransfer bases
    tftransfer clear-cache
"""

import argparse
import logging
import os
import sys
import time
from pathlib import Path

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
#: Where `tftransfer train` exports by default, under the current folder.
DEFAULT_EXPORT = Path("saved_models") / "demo_classifier"


def _unfreeze(value):
    return int(value) if value.isdigit() else value


def _augmentation(value):
    """Parses `flip,rotation=0.1,...` into `build_augmentation` arguments."""
    options = {"flip": None}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, number = item.partition("=")
        if name == "flip":
            options["flip"] = number or "horizontal"
        elif name in ("rotation", "zoom", "translation", "contrast"):
            try:
                options[name] = float(number)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{name} needs a fraction, as in {name}=0.1") from None
        else:
            raise argparse.ArgumentTypeError(
                f"unknown augmentation {name!r}; use flip, rotation, zoom, "
                "translation, contrast")
    return options


def _class_names(value):
    return [name.strip() for name in value.split(",")]


def _data_options(args):
    """`load_data` options from the data arguments of `train` and `export`."""
    options = {"validation_split": args.validation_split, "seed": args.seed}
    if args.tfds_data_dir and args.data.startswith("tfds:"):
        options["data_dir"] = args.tfds_data_dir
    if args.class_names:
        options["class_names"] = _class_names(args.class_names)
    options["image_cache"] = {"memory": True, "none": False}.get(args.image_cache,
                                                                  args.image_cache)
    return options


def _data_arguments():
    """The arguments that name and split the data, shared by `train` and `export`."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("data")
    group.add_argument("--data",
                       help="a folder of class subfolders (optionally split into train/ "
                            "val/ test/), a CSV of path,label rows, tfds:NAME[:SPLIT] "
                            "(e.g. tfds:tf_flowers), imagefolder:PATH for a TFDS "
                            "ImageFolder, an .npz of images and labels arrays, or a "
                            "folder saved by tf.data.Dataset.save (train's default: the "
                            "bundled demo; export's: none, so --class-names names the "
                            "classes)")
    group.add_argument("--class-names", metavar="A,B,...",
                       help="class names in label order, for an .npz with int labels or "
                            "a saved tf.data.Dataset")
    group.add_argument("--image-cache", default="memory", metavar="memory|none|DIR",
                       help="keep the decoded, resized images in memory, not at all "
                            "(decode every epoch), or in DIR, where a later run over the "
                            "same files finds them (default: memory, or "
                            "~/.cache/tftransfer/images for images that would take more "
                            "than half of the free memory)")
    group.add_argument("--tfds-data-dir",
                       help="where TFDS keeps its datasets (default: ~/tensorflow_datasets)")
    group.add_argument("--validation-split", type=float, default=0.2,
                       help="fraction of each class held out when there is no val/ folder "
                            "(default: 0.2)")
    group.add_argument("--seed", type=int, default=1337,
                       help="seeds the split, the shuffling and the initial weights; "
                            "train and export hold out the same images with the same "
                            "seed (default: 1337)")
    return parent


def _export_arguments():
    """The arguments of a SavedModel version, shared by `train` and `export`."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("export")
    group.add_argument("--model-version", type=int, metavar="N",
                       help="the export's version folder (default: one more than the "
                            "highest)")
    group.add_argument("--overwrite", action="store_true",
                       help="with --model-version, replace an existing version")
    return parent


def _add_train(commands, parents):
    from tftransfer.bases import BUNDLED_BASE
    from tftransfer.data.loader import DEFAULT_BATCH_SIZE
    from tftransfer.training import FINE_TUNE, HEAD

    train = commands.add_parser(
        "train", parents=parents, help="train a classifier on labelled images and export it",
        description="Train a classifier in two phases (the new head on the frozen base, "
                    "then the top layers at a low learning rate) and export it as a "
                    "versioned SavedModel. With no arguments, trains the bundled demo: "
                    "Fashion-MNIST classes 5-9 on the bundled base.")
    model = train.add_argument_group("model")
    model.add_argument("--base", default=BUNDLED_BASE,
                       help="a registry name (see `tftransfer bases`), a .keras file, or a "
                            f"SavedModel / TF Hub directory or URL (default: {BUNDLED_BASE})")
    model.add_argument("--weights", default="default",
                       help="'imagenet', 'none', a local weights file, or 'default' for "
                            "the base's own (default: default)")
    model.add_argument("--image-size", type=int,
                       help="square input size in pixels (default: the base's own)")
    model.add_argument("--dropout", type=float, default=0.2, help="(default: 0.2)")
    model.add_argument("--augment", type=_augmentation, metavar="SPEC",
                       help="random augmentation in training, e.g. "
                            "'flip,rotation=0.1,zoom=0.1,translation=0.1,contrast=0.2' "
                            "(fractions; flip may be flip=vertical)")
    phases = train.add_argument_group("phases")
    phases.add_argument("--head-epochs", type=int, default=HEAD.epochs,
                        help="most epochs of phase 1, the head alone; early stopping "
                             f"usually ends it sooner (default: {HEAD.epochs})")
    phases.add_argument("--head-learning-rate", type=float, default=HEAD.learning_rate,
                        help=f"learning rate of phase 1 (default: {HEAD.learning_rate})")
    phases.add_argument("--fine-tune-epochs", type=int, default=FINE_TUNE.epochs,
                        help="most epochs of phase 2, the unfrozen top; 0 skips it "
                             f"(default: {FINE_TUNE.epochs})")
    phases.add_argument("--fine-tune-learning-rate", type=float,
                        default=FINE_TUNE.learning_rate,
                        help="peak learning rate of phase 2 (default: "
                             f"{FINE_TUNE.learning_rate})")
    phases.add_argument("--unfreeze", type=_unfreeze, default=FINE_TUNE.unfreeze,
                        help="layers trained in phase 2: a number N (the top N), 'all', "
                             f"or a layer name (it and all above) (default: "
                             f"{FINE_TUNE.unfreeze})")
    phases.add_argument("--warmup-epochs", type=int, default=FINE_TUNE.warmup_epochs,
                        help="phase 2's rate ramps up over these epochs, then decays "
                             f"along a cosine (default: {FINE_TUNE.warmup_epochs})")
    phases.add_argument("--patience", type=int, default=HEAD.patience,
                        help="epochs without improvement before a phase stops "
                             f"(default: {HEAD.patience})")
    phases.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="images per replica per step; the global batch is this "
                             "times the replicas, as the log states (default: "
                             f"{DEFAULT_BATCH_SIZE})")
    phases.add_argument("--class-weight", choices=["auto", "none"], default="auto",
                        help="'auto' weighs classes by inverse frequency on imbalanced "
                             "data (default: auto)")
    phases.add_argument("--label-smoothing", type=float, default=0.0, help="(default: 0)")
    phases.add_argument("--feature-cache", default="default", metavar="default|none|DIR",
                        help="where phase 1 caches the frozen base's features: "
                             "$TFTRANSFER_CACHE_DIR or ~/.cache/tftransfer/features "
                             "(default), DIR, or none to run the base every epoch")
    phases.add_argument("--augmented-views", type=int, default=0, metavar="K",
                        help="with --augment, cache K augmented views per image for "
                             "phase 1; 0 runs phase 1 uncached (default: 0)")
    output = train.add_argument_group("output")
    output.add_argument("--export", default=str(DEFAULT_EXPORT),
                        help="SavedModel base path; a new version folder is written in "
                             f"it (default: {DEFAULT_EXPORT}, under the current folder)")
    output.add_argument("--save-keras", metavar="PATH",
                        help="also save the Keras model to this .keras file")
    output.add_argument("--log-dir", help="write TensorBoard logs of both phases here")
    output.add_argument("--quiet", action="store_true",
                        help="one line per epoch, never progress bars (by default: "
                             "progress bars in a terminal, one line per epoch otherwise)")
    _add_device_arguments(train)
    train.set_defaults(data=str(DEMO_DATA))


def _add_device_arguments(train):
    from tftransfer.distribute import PRECISIONS, STRATEGIES

    devices = train.add_argument_group(
        "devices", "where training runs; see tftransfer.distribute. With several workers "
                   "(TF_CONFIG), run the same command on each; the chief writes the "
                   "export")
    devices.add_argument("--strategy", choices=STRATEGIES, default="auto",
                         help="'auto': a TPU if attached, else several workers if "
                              "TF_CONFIG names them, else all GPUs if more than one, else "
                              "one device (default: auto)")
    devices.add_argument("--precision", choices=PRECISIONS, default="auto",
                         help="'auto': mixed_float16 on GPUs of compute capability 7+, "
                              "mixed_bfloat16 on TPU, float32 otherwise (default: auto)")
    devices.add_argument("--jit-compile", choices=["auto", "on", "off"], default="auto",
                         help="XLA-compile the training step; 'auto' lets Keras choose "
                              "(on for GPUs) (default: auto)")
    devices.add_argument("--learning-rate-scaling", choices=["sqrt", "linear", "none"],
                         default="sqrt",
                         help="how the learning rates grow with the replicas in sync "
                              "(default: sqrt, suited to Adam)")
    devices.add_argument("--backup-dir",
                         help="back up every epoch of both phases here; rerunning the same "
                              "command after a crash or preemption resumes from the last "
                              "epoch, in the right phase (shared storage with several "
                              "workers)")


def _add_export(commands, parents):
    from tftransfer.export import TFLITE_QUANTIZATIONS

    export = commands.add_parser(
        "export", parents=parents,
        help="export a saved Keras model as a SavedModel (and TFLite)",
        description="Export a classifier saved as a .keras file (train --save-keras) as a "
                    "TF Serving SavedModel version, and optionally as TFLite models, each "
                    "reported with its size and its accuracy on the validation data.")
    export.add_argument("--model", required=True, help="a .keras file")
    export.add_argument("--output", required=True,
                        help="SavedModel base path; a new version folder is written in it")
    export.add_argument("--tflite", default="",
                        help="TFLite variants to write into OUTPUT/tflite/: 'all' or a "
                             f"comma-separated subset of {','.join(TFLITE_QUANTIZATIONS)} "
                             "(needs --data with validation images)")


def _add_small_commands(commands):
    predict = commands.add_parser(
        "predict", help="print the top classes of images with an exported model",
        description="Run an exported SavedModel or TFLite model on image files and print "
                    "the top classes of each.")
    predict.add_argument("--model", required=True,
                         help="a SavedModel base path (its latest version is used), a "
                              "version folder, or a .tflite file with labels.txt beside it")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    predict.add_argument("--top-k", type=int, default=3, help="(default: 3)")

    commands.add_parser("bases", help="list the registered bases",
                        description="List the named bases that --base accepts.")

    check = commands.add_parser(
        "check-data", help="report every image file that training cannot use",
        description="Check a folder of labelled images: every file that cannot be used "
                    "(corrupt, truncated, empty, not an image, unsupported format, "
                    "hidden, a broken or looping link) is listed with its reason, and "
                    "the totals reconcile: found = used + skipped. Exits with 2 if the "
                    "folder cannot be trained on.")
    check.add_argument("folder", help="a folder of class subfolders, or of train/ val/ "
                                      "test/ folders of class subfolders")

    clear = commands.add_parser(
        "clear-cache", help="delete cached features",
        description="Delete the feature cache's entries (folders named by their "
                    "fingerprint); other files in the folder are left alone.")
    clear.add_argument("--feature-cache", metavar="DIR",
                       help="the cache folder (default: $TFTRANSFER_CACHE_DIR or "
                            "~/.cache/tftransfer/features)")


def build_parser():
    """Returns the `argparse` parser of the `tftransfer` command."""
    from tftransfer import __version__

    parser = argparse.ArgumentParser(
        prog="tftransfer",
        description="Transfer learning for Keras 3: a pretrained base, a new softmax "
                    "head, two-phase fine-tuning, and a SavedModel that TF Serving loads.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data, export = _data_arguments(), _export_arguments()
    _add_train(commands, [data, export])
    _add_export(commands, [data, export])
    _add_small_commands(commands)
    return parser


def train_command(args):
    """Runs `tftransfer train`; returns the exit status."""
    import keras

    import tftransfer
    from tftransfer import Phase, distribute

    # Multi-worker and TPU strategies set up the runtime: before any other op.
    strategy = distribute.select_strategy(args.strategy)
    distribute.select_precision(args.precision, strategy)
    keras.utils.set_random_seed(args.seed)
    weights = None if args.weights.lower() == "none" else args.weights
    with strategy.scope():
        base = tftransfer.load_base(args.base, weights=weights, input_size=args.image_size)
    batch_size = distribute.global_batch_size(args.batch_size, strategy)
    data = tftransfer.load_data(args.data, base.input_size, batch_size=batch_size,
                                **_data_options(args))
    print(f"data: {len(data.class_names)} classes from {args.data}"
          + (f", {len(data.skipped)} file(s) skipped (see above)" if data.skipped else ""))
    with strategy.scope():
        model = tftransfer.build_classifier(base, len(data.class_names),
                                            dropout=args.dropout,
                                            augmentation=args.augment)
    start = time.time()
    callbacks = [keras.callbacks.TensorBoard(args.log_dir)] if args.log_dir else []
    history = tftransfer.fine_tune(
        model, data.train, data.validation,
        head=Phase.head(epochs=args.head_epochs, learning_rate=args.head_learning_rate,
                        patience=args.patience),
        fine_tune=Phase.fine_tune(epochs=args.fine_tune_epochs,
                                  learning_rate=args.fine_tune_learning_rate,
                                  unfreeze=args.unfreeze, warmup_epochs=args.warmup_epochs,
                                  patience=args.patience),
        class_weight=None if args.class_weight == "none" else "auto",
        label_smoothing=args.label_smoothing,
        feature_cache={"default": True, "none": False}.get(args.feature_cache,
                                                           args.feature_cache),
        augmented_views=args.augmented_views, callbacks=callbacks, seed=args.seed,
        verbose=2 if args.quiet else "auto",
        options=distribute.RunOptions(
            jit_compile={"auto": "auto", "on": True, "off": False}[args.jit_compile],
            learning_rate_scaling=(None if args.learning_rate_scaling == "none"
                                   else args.learning_rate_scaling),
            backup_dir=args.backup_dir))
    print(f"trained in {time.time() - start:.0f} s; kept the weights of phase "
          f"'{history.kept_phase}'")
    metrics = {}
    if data.test is not None:
        metrics = distribute.evaluate(model, data.test)
        print(f"test accuracy: {metrics['accuracy']:.4f} "
              f"(loss {metrics['loss']:.4f})")
    if args.save_keras:
        save_as = Path(args.save_keras)
        if not distribute.is_chief(strategy):
            # So that workers sharing a disk do not overwrite the chief's file.
            task = strategy.cluster_resolver.task_id
            save_as = save_as.with_name(f"{save_as.stem}.worker-{task}{save_as.suffix}")
        model.save(save_as)
        print(f"saved the Keras model to {save_as}")
    if not distribute.is_chief(strategy):
        print("export: left to the chief")
        return 0
    path = tftransfer.export_saved_model(
        model, args.export, data.class_names, version=args.model_version,
        overwrite=args.overwrite,
        metadata={"base": base.name, "preprocessing": base.preprocessing,
                  "test_metrics": metrics})
    print(f"exported to {os.path.abspath(path)}")
    return 0


def export_command(args):
    """Runs `tftransfer export`; returns the exit status."""
    import keras

    import tftransfer
    from tftransfer.errors import TransferError
    from tftransfer.export import TFLITE_QUANTIZATIONS, export_tflite_variants

    path = Path(args.model)
    if not path.is_file() or path.suffix != ".keras":
        raise TransferError(f"--model must be a .keras file; {path} is not one")
    model = keras.saving.load_model(path)
    data = None
    if args.data:
        data = tftransfer.load_data(args.data, model.input_shape[1:3],
                                    **_data_options(args))
    class_names = (_class_names(args.class_names) if args.class_names
                   else data.class_names if data else None)
    if class_names is None:
        raise TransferError("pass --data or --class-names so the export knows the "
                            "class names")
    version = tftransfer.export_saved_model(model, args.output, class_names,
                                            version=args.model_version,
                                            overwrite=args.overwrite,
                                            metadata={"source": str(path)})
    print(f"exported to {version}")
    if not args.tflite:
        return 0
    variants = (TFLITE_QUANTIZATIONS if args.tflite == "all"
                else tuple(v.strip() for v in args.tflite.split(",")))
    if data is None or data.validation is None:
        raise TransferError("--tflite needs --data with validation images, for the "
                            "accuracy report and int8 calibration")
    report = export_tflite_variants(model, Path(args.output) / "tflite",
                                    validation=data.validation,
                                    representative_data=data.train,
                                    class_names=class_names, quantizations=variants)
    print(f"{'variant':14s} {'size':>10s} {'val accuracy':>13s}")
    for row in report:
        size = f"{row['bytes'] / 1024:.0f} KiB" if row["bytes"] else "-"
        print(f"{row['quantization']:14s} {size:>10s} {row['accuracy']:13.4f}  "
              f"{row['path'] or '(the Keras model)'}")
    return 0


def predict_command(args):
    """Runs `tftransfer predict`; returns the exit status."""
    from tftransfer.export import predict_files

    for path, result in predict_files(args.model, args.images, top_k=args.top_k):
        ranked = ", ".join(f"{name} {score:.3f}" for name, score in result)
        print(f"{path}: {ranked}")
    return 0


def bases_command(args):
    """Runs `tftransfer bases`; returns the exit status."""
    from tftransfer.bases import list_bases

    for spec in list_bases():
        print(f"{spec.name:22s} {spec.input_size:>4d}px  {spec.preprocessing:6s} "
              f"{spec.description}")
    return 0


def check_data_command(args):
    """Runs `tftransfer check-data`; returns the exit status."""
    from tftransfer.data import check_data
    from tftransfer.errors import TransferError

    report = check_data(args.folder)
    for path, reason in sorted(report.skipped.items()):
        print(f"skipped {path}: {reason}")
    for split, classes in report.used.items():
        counts = ", ".join(f"{name} {len(paths)}" for name, paths in classes.items())
        print(f"{split}: {counts}")
    print(report.summary())
    if report.problems:
        raise TransferError("; ".join(report.problems))
    return 0


def clear_cache_command(args):
    """Runs `tftransfer clear-cache`; returns the exit status."""
    from tftransfer.feature_cache import clear_feature_cache, default_cache_dir

    count = clear_feature_cache(args.feature_cache)
    print(f"deleted {count} cache entr{'y' if count == 1 else 'ies'} from "
          f"{args.feature_cache or default_cache_dir()}")
    return 0


def main(argv=None):
    """The entry point of the `tftransfer` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="tftransfer: %(message)s", level=logging.INFO)
    # TensorFlow's logger prints its own records; through ours they would show twice.
    logging.getLogger("tensorflow").propagate = False
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # "Assets written to ..."
    from tftransfer.errors import TransferError

    command = {"train": train_command, "predict": predict_command,
               "export": export_command,
               "bases": bases_command, "check-data": check_data_command,
               "clear-cache": clear_cache_command}[args.command]
    try:
        return command(args)
    except TransferError as error:
        print(f"tftransfer: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
