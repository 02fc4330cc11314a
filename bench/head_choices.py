"""What the head phase's choices are worth on few real photos, measured on cached features.

The `"auto"` rules for augmented views and the refit (`tftransfer/training/auto.py`)
were chosen with this script. It extracts, once, the features of the
shared MobileNetV2-160 over an oxford17 split (the training photos plain
and as `--views` augmented views through tftransfer's default
augmentation, and the 20 test photos per class), then trains only the
Dense head on them, many ways and over several seeds, in seconds each:

* `views=K`: K augmented views of each training photo (0: the photos as
  they are);
* `refit`: after early stopping has picked the epoch count on the held-out
  photos, train a fresh head on all the photos for that many epochs (what
  `refit="auto"` does);
* `smoothing`: label smoothing of 0.1;
* `l2norm`: features scaled to unit length (times 10) before the head.

The held-out photos are `--val-per-class` of each class's training photos,
chosen by the seed; the rest train. Everything is scored on the same test
photos.

`--taps none` reads MobileNetV2's own features only; by default block 14's
pooled output is appended, as `load_base` does (`bases._TAPS`). The two
runs' tables, side by side, are what chose that default.

`--cell NAME --base NAME` runs the same choices on a cell of
`bench/quality.py` (its training photos and test set) with one of its
bases (`mobilenet_v2`, `lite0`), so that the rules chosen on oxford17 are
checked on other data.

Usage:
    python bench/head_choices.py                 # 10 photos per class, 8 views
    python bench/head_choices.py --taps none     # without the tapped block
    python bench/head_choices.py --size 60 --views 0 --val-per-class 12 \
        --configs plain                          # 60 per class, as the defaults train
    python bench/head_choices.py --cell eurosat-20 --base lite0 --val-per-class 4

Prints a table (mean test accuracy over the seeds, each seed's figure and
the epochs early stopping picked) and writes `results/head_choices_<size>[_no_taps].md`
(`results/head_choices_<cell>_<base>.md` with `--cell`).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tftransfer  # noqa: E402
from tftransfer.models.builder import augmentation_of  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from quality_oxford17 import FLOWERS, SIZE, WEIGHTS, split_folder  # noqa: E402

#: name -> (views, refit, label smoothing, l2-normalised features)
CONFIGS = {
    "plain": (0, False, 0.0, False),
    "plain + refit": (0, True, 0.0, False),
    "3 views + refit": (3, True, 0.0, False),
    "4 views": (4, False, 0.0, False),
    "4 views + refit": (4, True, 0.0, False),
    "6 views + refit": (6, True, 0.0, False),
    "8 views + refit": (8, True, 0.0, False),
    "8 views + refit + l2norm": (8, True, 0.0, True),
    "8 views + refit + smoothing": (8, True, 0.1, False),
}


def extract(folder, views, taps="default", seed=0, base=None):
    """Features of the training photos (plain, and `views` augmented) and the test photos.

    `base`: a name in `quality.BASES` (its default taps), or `None` for the
    shared MobileNetV2 with `taps`.
    """
    keras.utils.set_random_seed(seed)
    if base is not None:
        base = quality.load_base(base)
    else:
        base = tftransfer.load_base("mobilenet_v2", weights=str(WEIGHTS), input_size=SIZE,
                                    taps=() if taps == "none" else taps)
    data = tftransfer.load_data(str(folder), base.input_size, validation_split=0, seed=seed)
    model = tftransfer.build_classifier(base, len(data.class_names))
    features, augment = model.get_layer("features"), augmentation_of(model)
    plain = tf.function(lambda x: features(x, training=False))
    augmented = tf.function(lambda x: features(augment(x, training=True), training=False))

    def arrays(dataset):
        # One pass: the training batches are reshuffled on every pass.
        pairs = [(x.numpy(), y.numpy()) for x, y in dataset]
        return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])

    def run(images, fn):
        batches = tf.data.Dataset.from_tensor_slices(images).batch(32)
        return np.concatenate([fn(x).numpy() for x in batches])

    images, labels = arrays(data.train)
    test_images, test_labels = arrays(data.test)
    return {"plain": run(images, plain),
            "views": [run(images, augmented) for _ in range(views)],
            "labels": labels, "test": run(test_images, plain), "test_labels": test_labels}


def held_out(labels, per_class, seed):
    """Indices `(train, validation)`, `per_class` of each class held out."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        val += list(idx[:per_class])
        train += list(idx[per_class:])
    return np.array(train), np.array(val)


def head(features, classes, seed, smoothing, l2norm):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((features,))
    x = inputs
    if l2norm:
        x = keras.layers.Rescaling(10.0)(keras.layers.UnitNormalization()(x))
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.CategoricalCrossentropy(label_smoothing=smoothing),
                  metrics=["accuracy"])
    return model


def score(f, config, seed, val_per_class):
    """Trains one head as `config` says; returns (test accuracy, epochs)."""
    views, refit, smoothing, l2norm = config
    classes = int(f["labels"].max()) + 1
    one_hot = np.eye(classes)

    def rows(idx):
        if views == 0:
            return f["plain"][idx], f["labels"][idx]
        return (np.concatenate([f["views"][v][idx] for v in range(views)]),
                np.tile(f["labels"][idx], views))

    train, val = held_out(f["labels"], val_per_class, seed)
    x, y = rows(train)
    model = head(x.shape[1], classes, seed, smoothing, l2norm)
    history = model.fit(
        x, one_hot[y], batch_size=32, epochs=50, verbose=0,
        validation_data=(f["plain"][val], one_hot[f["labels"][val]]),
        callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=5,
                                                 restore_best_weights=True)])
    epochs = int(np.argmin(history.history["val_loss"])) + 1
    if refit:
        x, y = rows(np.arange(len(f["labels"])))
        model = head(x.shape[1], classes, seed, smoothing, l2norm)
        model.fit(x, one_hot[y], batch_size=32, epochs=epochs, verbose=0)
    predicted = model.predict(f["test"], verbose=0).argmax(-1)
    return float((predicted == f["test_labels"]).mean()), epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10, help="training photos per class")
    parser.add_argument("--views", type=int, default=8, help="augmented views to extract")
    parser.add_argument("--val-per-class", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--configs", help="comma-separated names (default: all that fit --views)")
    parser.add_argument("--taps", default="default", choices=("default", "none"),
                        help="append the registry's tapped inner layers to the features")
    parser.add_argument("--cell", choices=list(quality.CELLS),
                        help="a cell of bench/quality.py instead of oxford17 at --size")
    parser.add_argument("--base", default="mobilenet_v2", choices=("mobilenet_v2", "lite0"),
                        help="with --cell: the base")
    parser.add_argument("--output", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    if not FLOWERS.is_dir() or not WEIGHTS.is_file():
        print(f"skipped: {FLOWERS} or {WEIGHTS} is missing (see ../shared/README.md)")
        return
    names = args.configs.split(",") if args.configs else [
        n for n, c in CONFIGS.items() if c[0] <= args.views]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if args.cell:
            features = extract(quality.CELLS[args.cell](Path(tmp) / args.cell), args.views,
                               base=args.base)
        else:
            features = extract(split_folder(Path(tmp) / "split", args.size), args.views,
                               args.taps)
        print(f"extracted {args.views} view(s) of {len(features['labels'])} photos and "
              f"{len(features['test_labels'])} test photos in "
              f"{time.perf_counter() - start:.0f} s")
    where = (f"{args.cell} ({args.val_per_class} held out per class), {args.seeds} "
             f"seeds, {args.base}" if args.cell else
             f"{args.size} photos per class ({args.val_per_class} held out), {args.seeds} "
             f"seeds, MobileNetV2-160 on oxford17, taps {args.taps}")
    lines = [f"Head choices at {where}:", "",
             "| setup | test accuracy | per seed | epochs |", "|---|---|---|---|"]
    for name in names:
        runs = [score(features, CONFIGS[name], s, args.val_per_class)
                for s in range(args.seeds)]
        accuracies = [a for a, _ in runs]
        spread = f" ± {100 * statistics.stdev(accuracies):.1f}" if len(runs) > 1 else ""
        line = (f"| {name} | {100 * statistics.mean(accuracies):.1f}%{spread} | "
                f"{', '.join(f'{100 * a:.1f}' for a in accuracies)} | "
                f"{', '.join(str(e) for _, e in runs)} |")
        print(line, flush=True)
        lines.append(line)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    name = f"head_choices_{args.size}" + ("_no_taps" if args.taps == "none" else "")
    if args.cell:
        name = f"head_choices_{args.cell}_{args.base}"
    (output / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
