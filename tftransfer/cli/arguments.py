"""The `tftransfer` command's arguments: one parser per command, shared groups."""

import argparse
from pathlib import Path

from tftransfer.cli import types
from tftransfer.defaults import (BUNDLED_BASE, DEFAULT_BATCH_SIZE, MAX_PIXELS, PRECISIONS,
                                 STRATEGIES, TFLITE_QUANTIZATIONS, TOP_K)

DEMO_DATA = Path(__file__).resolve().parent.parent / "demo_data"
#: Where `tftransfer train` exports by default, under the current folder.
DEFAULT_EXPORT = Path("saved_models") / "demo_classifier"


class _Renamed(argparse.Action):
    """A flag that was renamed: using it is an error that gives the new name."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is now {self.default} (see --help)")


def renamed(parser, old, new):
    """Adds `old` as a hidden flag whose use says to pass `new` instead.

    Args:
        parser: The command's parser.
        old: The flag's former name.
        new: What to pass now, as the error shows it.
    """
    parser.add_argument(old, action=_Renamed, default=new, nargs="?", dest=f"renamed_{old[2:]}",
                        help=argparse.SUPPRESS)


def checked_option(action, value, source):
    """A value from a config file, checked as the command line checks its flag.

    Args:
        action: The option's `argparse` action.
        value: The value as the config file holds it (parsed already).
        source: The file, for the error.

    Returns:
        The value, converted by the option's type where it was a string.

    Raises:
        TransferError: The value is not one the flag accepts.
    """
    from tftransfer.errors import TransferError

    flag = action.option_strings[0] if action.option_strings else action.dest

    def refuse(why):
        return TransferError(f"--config {source}: {flag} {value!r} is not valid ({why})")

    if action.nargs == 0:  # store_true and the like.
        if not isinstance(value, bool):
            raise refuse("expected true or false")
        return value
    if isinstance(value, dict) and action.type is types.augmentation:
        text = ",".join(key if key == "flip" and item == "horizontal" else f"{key}={item}"
                        for key, item in value.items() if item is not None)
        value = text or "none"
    if value is not None and action.type is not None and not isinstance(value, bool):
        try:
            value = action.type(value if isinstance(value, str) else repr(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
            raise refuse(error) from None
    if action.choices is not None and value not in action.choices:
        raise refuse(f"choose from {', '.join(map(str, action.choices))}")
    return value


def class_names_option(value):
    return [name.strip() for name in value.split(",")]


def data_options(args):
    """`load_data` options from the data arguments of `train` and `export`."""
    options = {"validation_split": args.validation_split, "seed": args.seed}
    if args.tfds_data_dir and args.data.startswith("tfds:"):
        options["data_dir"] = args.tfds_data_dir
    if args.class_names:
        options["class_names"] = class_names_option(args.class_names)
    options["image_cache"] = {"memory": True, "none": False}.get(args.image_cache,
                                                                  args.image_cache)
    options.update(multi_label=args.multi_label or None, label_sep=args.label_sep)
    return options


def data_arguments():
    """The arguments that name and split the data, shared by `train` and `export`."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("data")
    group.add_argument("--data",
                       help="a folder of class subfolders (optionally split into train/ "
                            "val/ test/), a CSV of path,label rows (or path,labels for "
                            "multi-label data), tfds:NAME[:SPLIT] "
                            "(e.g. tfds:tf_flowers), imagefolder:PATH for a TFDS "
                            "ImageFolder, an .npz of images and labels arrays, or a "
                            "folder saved by tf.data.Dataset.save (train's default: the "
                            "bundled demo; export's: none, so --class-names names the "
                            "classes)")
    group.add_argument("--class-names", metavar="A,B,...",
                       help="class names in label order, for an .npz with int labels or "
                            "a saved tf.data.Dataset")
    group.add_argument("--multi-label", action="store_true",
                       help="read a CSV's labels as a set per image (a 'path,labels' "
                            "header says so itself) and train sigmoids, one per label")
    group.add_argument("--label-sep", type=types.separator, default=" ", metavar="SEP",
                       help="what separates a multi-label CSV's labels (default: a space)")
    group.add_argument("--image-cache", default="memory", metavar="memory|none|DIR",
                       help="keep the decoded, resized images in memory, not at all "
                            "(decode every epoch), or in DIR, where a later run over the "
                            "same files finds them (default: memory, or "
                            "~/.cache/tftransfer/images for images that would take more "
                            "than half of the free memory)")
    group.add_argument("--tfds-data-dir",
                       help="where TFDS keeps its datasets (default: ~/tensorflow_datasets)")
    group.add_argument("--validation-split", type=types.FRACTION, default=0.2,
                       help="fraction of each class held out when there is no val/ folder "
                            "(default: 0.2)")
    group.add_argument("--seed", type=int, default=1337,
                       help="seeds the split, the shuffling and the initial weights; "
                            "train and export hold out the same images with the same "
                            "seed (default: 1337)")
    return parent


def export_arguments():
    """The arguments of a SavedModel version, shared by `train` and `export`."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("export")
    group.add_argument("--model-version", type=types.COUNT, metavar="N",
                       help="the export's version folder (default: one more than the "
                            "highest)")
    group.add_argument("--overwrite", action="store_true",
                       help="with --model-version, replace an existing version")
    group.add_argument("--max-pixels", type=types.POSITIVE, default=MAX_PIXELS, metavar="N",
                       help="serving_default refuses an image of more pixels (width x "
                            "height x GIF frames, read from its header) before decoding "
                            f"it (default: {MAX_PIXELS})")
    return parent


def base_arguments():
    """The arguments that choose the pretrained base, shared by `train`, `lr-find`, `compare`."""

    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("base")
    group.add_argument("--base", default=BUNDLED_BASE,
                       help="a registry name (see `tftransfer bases`), a .keras file, or a "
                            f"SavedModel / TF Hub directory or URL (default: {BUNDLED_BASE})")
    group.add_argument("--weights", default="default",
                       help="'imagenet', 'none', a local weights file, or 'default' for "
                            "the base's own (default: default)")
    group.add_argument("--image-size", type=types.POSITIVE,
                       help="square input size in pixels (default: the base's own)")
    group.add_argument("--taps", default="default", metavar="default|none|LAYER[,LAYER]",
                       type=types.taps,
                       help="inner layers whose pooled outputs join the features "
                            "(docs/bases.md#taps-features-from-inside-the-base): the "
                            "base's own choice, none, or layer names (default: default)")
    group.add_argument("--batch-size", type=types.POSITIVE, default=DEFAULT_BATCH_SIZE,
                       help="images per replica per step; the global batch is this "
                            "times the replicas, as the log states (default: "
                            f"{DEFAULT_BATCH_SIZE})")
    group.add_argument("--feature-cache", default="default", metavar="default|none|DIR",
                       help="where the frozen base's features (and, in phase 2, the "
                            "frozen layers' activations) are cached: "
                            "$TFTRANSFER_CACHE_DIR or ~/.cache/tftransfer/features "
                            "(default), DIR, or none to run the base every epoch")
    return parent


def add_train(commands, parents):
    train = commands.add_parser(
        "train", parents=parents, help="train a classifier on labelled images and export it",
        description="Train a classifier in two phases (the head: the new head on the frozen "
                    "base; the top: the top layers too, at a low learning rate) and export "
                    "it as a versioned SavedModel. With no arguments, trains the bundled "
                    "demo: Fashion-MNIST classes 5-9 on the bundled base.")
    model = train.add_argument_group("head")
    model.add_argument("--dropout", type=types.FRACTION, default=0.2, help="(default: 0.2)")
    model.add_argument("--augment", type=types.augmentation, metavar="SPEC", default="auto",
                       help="random augmentation in training: 'auto' (flip, rotation "
                            "0.1, zoom in up to 0.2), 'none', or e.g. "
                            "'flip,rotation=0.1,zoom=0.1,translation=0.1,contrast=0.2' "
                            "(fractions; flip may be flip=vertical) (default: auto)")
    _phase_arguments(train.add_argument_group("phases"))
    _output_arguments(train.add_argument_group("output"))
    add_device_arguments(train)
    train.set_defaults(data=str(DEMO_DATA))
    return train


def _phase_arguments(phases):
    from tftransfer.training.phases import HEAD, TOP

    phases.add_argument("--head-epochs", type=types.COUNT, default=HEAD.epochs,
                        help="most epochs of the head phase (the head alone); early "
                             f"stopping usually ends it sooner (default: {HEAD.epochs})")
    phases.add_argument("--head-learning-rate", type=types.rate, default=HEAD.learning_rate,
                        help="learning rate of the head phase, or 'auto' to pick it with a "
                             "learning-rate range test on the cached features (see "
                             f"`tftransfer lr-find`) (default: {HEAD.learning_rate})")
    phases.add_argument("--head-patience", type=types.COUNT, default=HEAD.patience,
                        help="epochs without improvement of the validation loss before "
                             f"the head phase stops (default: {HEAD.patience})")
    phases.add_argument("--top-epochs", type=types.COUNT, default=TOP.epochs,
                        help="epochs of the top phase (the unfrozen top of the base), "
                             "which runs them all unless --top-patience is set; 0 skips "
                             f"it (default: {TOP.epochs})")
    phases.add_argument("--top-learning-rate", type=types.rate_number, default=TOP.learning_rate,
                        help=f"peak learning rate of the top phase (default: "
                             f"{TOP.learning_rate})")
    phases.add_argument("--top-patience", type=types.COUNT, default=TOP.patience,
                        help="stop the top phase early after this many epochs without "
                             "improvement, and keep its best epoch (default: none; it runs "
                             "every epoch and keeps the last, which is more accurate on "
                             "real photos: docs/training.md)")
    phases.add_argument("--unfreeze", type=types.unfreeze, default=TOP.unfreeze,
                        help="layers trained in the top phase: 'auto' (a share of the base "
                             "that grows with the images per class; see docs/training.md), "
                             "a number N (the top N), 'all', a layer name (it and all "
                             f"above), or 'none' (default: {TOP.unfreeze})")
    phases.add_argument("--warmup-epochs", type=types.COUNT, default=TOP.warmup_epochs,
                        help="the top phase's rate ramps up over these epochs, then decays "
                             f"along a cosine (default: {TOP.warmup_epochs})")
    phases.add_argument("--class-weight", choices=["auto", "none"], default="auto",
                        help="'auto' weighs classes by inverse frequency on imbalanced "
                             "data (default: auto)")
    phases.add_argument("--label-smoothing", type=types.FRACTION, default=0.0, help="(default: 0)")
    phases.add_argument("--augmented-views", type=types.views, default="auto", metavar="K",
                        help="cache K augmented views of each image for both phases; 0 "
                             "runs them uncached with fresh augmentation every epoch; "
                             "'auto': below 12 images per class, enough views for about "
                             "48 rows in the smallest class (at most 8), else the images "
                             "unaugmented (default: auto)")
    phases.add_argument("--refit", choices=("auto", "on", "off"), default="auto",
                        help="when the top phase does not run, train the head again on "
                             "train + validation for the epochs early stopping picked (the "
                             "validation split is then trained on: judge on a test split); "
                             "'auto': below 30 images per class (default: auto)")


def _output_arguments(output):
    output.add_argument("--dry-run", action="store_true",
                        help="print what the run would do (each phase's epochs, rate and "
                             "depth, what is cached and why not, the views, the refit, "
                             "the keep rule) and stop without training")
    output.add_argument("--export", default=str(DEFAULT_EXPORT),
                        help="SavedModel base path; a new version folder is written in "
                             f"it (default: {DEFAULT_EXPORT}, under the current folder)")
    output.add_argument("--save-keras", metavar="PATH",
                        help="also save the Keras model to this .keras file")
    output.add_argument("--run-dir", metavar="DIR",
                        help="the run's record: config.json (every option, versions, the "
                             "data's digest, the seed), history.csv, TensorBoard logs/, "
                             "and report/ on the test split (default: "
                             "runs/<date-time>-<data name>)")
    output.add_argument("--config", metavar="CONFIG_JSON",
                        help="run again with the options of a run's config.json; flags "
                             "given here override them")
    output.add_argument("--log-dir", help="write TensorBoard logs of both phases here "
                                          "(default: the run folder's logs/)")
    output.add_argument("--quiet", action="store_true",
                        help="one line per epoch, never progress bars (by default: "
                             "progress bars in a terminal, one line per epoch otherwise)")


def add_device_arguments(train):

    devices = train.add_argument_group(
        "devices", "where training runs; see tftransfer.training.distribute. With several workers "
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


def add_export(commands, parents):

    export = commands.add_parser(
        "export", parents=parents,
        help="export a saved Keras model as a SavedModel (and TFLite)",
        description="Export a classifier saved as a .keras file (train --save-keras) as a "
                    "TF Serving SavedModel version, and optionally as TFLite models, each "
                    "reported with its size and its accuracy on the validation data.")
    export.add_argument("--model", required=True, help="a .keras file")
    export.add_argument("--export", required=True, metavar="DIR",
                        help="SavedModel base path, as train's --export; a new version "
                             "folder is written in it")
    renamed(export, "--output", "--export DIR")
    export.add_argument("--onnx", action="store_true",
                        help="also write DIR/onnx/model.onnx (pixels in, probabilities "
                             "out, the labels in its metadata; pip install "
                             "'tftransfer[onnx]')")
    export.add_argument("--tflite", default="",
                        help="TFLite variants to write into DIR/tflite/: 'all' or a "
                             f"comma-separated subset of {','.join(TFLITE_QUANTIZATIONS)} "
                             "(needs --data with validation images)")
    export.add_argument("--trust-model", action="store_true",
                        help="load the model file without Keras's safe mode: only for a "
                             "file you trust, as it may then name a TF Hub module to "
                             "fetch and run, or be a legacy .h5 file")


def add_lr_find(commands, parents):
    lr_find = commands.add_parser(
        "lr-find", parents=parents, help="pick the head's learning rate from the data",
        description="Run a learning-rate range test (Smith, 2015) for the new head on the "
                    "frozen base's cached features: the rate grows step by step from 1e-6 "
                    "to 1 while the loss is recorded. Prints the rate picked (a tenth of "
                    "the rate at the lowest loss), which `train --head-learning-rate "
                    "auto` uses, and saves the loss-versus-rate plot.")
    lr_find.add_argument("--plot", default="lr_find.png",
                         help="where the plot goes (default: lr_find.png)")
    lr_find.set_defaults(data=str(DEMO_DATA))


def add_compare(commands, parents):
    compare = commands.add_parser(
        "compare", parents=parents,
        help="compare transfer with training from scratch on the same test images",
        description="Train three classifiers on one seeded split (the base's architecture "
                    "from scratch, feature extraction, fine-tuning) and score them on the "
                    "same test images (the validation images when there is no test/ "
                    "split). Prints a table (accuracy, macro F1, wall time) and writes a "
                    "page with a bar chart and the three confusion matrices. With no "
                    "--data, uses the bundled demo.")
    compare.add_argument("--methods", default="scratch,features,fine_tune",
                         help="which to run (default: scratch,features,fine_tune)")
    compare.add_argument("--scratch-epochs", type=types.POSITIVE, default=30,
                         help="most epochs from scratch; early stopping usually ends it "
                              "sooner (default: 30)")
    compare.add_argument("--output", default="compare",
                         help="the page's folder (default: compare)")
    compare.set_defaults(data=str(DEMO_DATA))


def add_audit(commands, parents):
    audit = commands.add_parser(
        "audit", parents=parents,
        help="find duplicates, train/test leaks, likely label errors and outliers",
        description="Read every split of a folder once through the frozen base (the "
                    "features are cached for training too) and report exact and near "
                    "duplicates, photos shared by two splits (leaks, with the held-out "
                    "accuracy with and without them), likely label errors (confident "
                    "learning, with the audit extra: pip install 'tftransfer[audit]') and "
                    "outliers. Writes audit.json, audit.csv and audit.html; nothing is "
                    "deleted or moved.")
    audit.add_argument("folder", help="a folder of class subfolders, or of train/ val/ test/")
    audit.add_argument("--output", default="audit",
                       help="the folder of audit.json, audit.csv, audit.html (default: audit)")
    audit.add_argument("--write-clean-list", metavar="PATH",
                       help="write the files to keep, one per line: all but the copy of "
                            "each duplicate and each leaked held-out photo")
    audit.add_argument("--near-duplicate", type=types.SIMILARITY, metavar="SIMILARITY",
                       help="the cosine similarity of two photos' features from which they "
                            "are copies (default: read from the data, see docs/audit.md)")


def add_evaluate(commands):
    evaluate = commands.add_parser(
        "evaluate", help="score a model on labelled images and write a report page",
        description="Score a classifier (an exported SavedModel, a .keras file or a "
                    ".tflite file) on a folder of labelled images (its test/ split if it "
                    "has one, else every image) and write report.json and a "
                    "self-contained report.html: per-class precision, recall and F1, the "
                    "confusion matrix, the most confidently wrong images, and a "
                    "reliability diagram.")
    evaluate.add_argument("--model", required=True,
                          help="a SavedModel base path or version folder, a .keras file, "
                               "or a .tflite file (with labels.txt beside it)")
    evaluate.add_argument("--data", required=True,
                          help="a folder of class subfolders, or of train/ val/ test/; "
                               "for a multi-label model, a CSV with a path,labels header")
    evaluate.add_argument("--output", default="report",
                          help="the report's folder (default: report)")
    evaluate.add_argument("--top-k", type=types.POSITIVE, default=TOP_K,
                          help=f"the k of top-k accuracy (default: {TOP_K})")
    evaluate.add_argument("--trust-model", action="store_true",
                        help="load the model file without Keras's safe mode: only for a "
                             "file you trust, as it may then name a TF Hub module to "
                             "fetch and run, or be a legacy .h5 file")


def add_small_commands(commands):
    predict = commands.add_parser(
        "predict", help="classify images, folders or lists of paths with an exported model",
        description="Run an exported SavedModel or TFLite model on images, in batches "
                    "(memory stays flat over any number of them), and print or write the "
                    "top classes of each. Every readable image is answered; every other "
                    "one is named with its reason. Exit status: 0 when every image was "
                    "answered, 3 when some were skipped, 2 on an error.")
    predict.add_argument("--model", required=True,
                         help="a SavedModel base path (its latest version is used), a "
                              "version folder, or a .tflite file with labels.txt beside it")
    predict.add_argument("images", nargs="+", metavar="PATH",
                         help="image files, folders (read recursively) and .txt files "
                              "listing image paths, one per line")
    predict.add_argument("--top-k", type=types.POSITIVE, default=TOP_K,
                         help=f"classes per image (default: {TOP_K})")
    predict.add_argument("--predictions", metavar="FILE",
                         help="write predictions.csv (path, label, score, then the rest "
                              "of the top k, and error) or .jsonl instead of printing them; "
                              "a progress bar shows in a terminal")
    renamed(predict, "--output", "--predictions FILE")
    predict.add_argument("--batch-size", type=types.POSITIVE, default=64,
                         help="images per call of the model (default: 64)")

    commands.add_parser("bases", help="list the registered bases",
                        description="List the named bases that --base accepts.")

    clear = commands.add_parser(
        "clear-cache", help="delete cached features",
        description="Delete the feature cache's entries (folders named by their "
                    "fingerprint); other files in the folder are left alone.")
    clear.add_argument("--feature-cache", default="default", metavar="default|DIR",
                       help="the cache folder, as train takes it (default: "
                            "$TFTRANSFER_CACHE_DIR or ~/.cache/tftransfer/features)")


def add_check_data(commands, parents):
    check = commands.add_parser(
        "check-data", parents=parents, help="report every image file that training cannot use",
        description="Check labelled images as train --data reads them: every file that "
                    "cannot be used (corrupt, truncated, empty, not an image, unsupported "
                    "format, hidden, a broken or looping link) is listed with its reason, "
                    "and the totals reconcile: found = used + skipped. Exits with 2 if the "
                    "data cannot be trained on.")
    check.add_argument("folder", nargs="?", metavar="DATA",
                       help="the data, as --data takes it: a folder of class subfolders (or "
                            "of train/ val/ test/), a CSV, tfds:NAME, an .npz, ...")
