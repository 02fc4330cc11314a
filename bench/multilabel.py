"""Multi-label quality on real photos: tftransfer's defaults against a plain Keras recipe.

Data, built from `../shared/datasets/oxford17_flowers` with a seed: each
species' 80 photos are split into 20 test photos and 60 training photos,
and each split gives three kinds of images:

* single photos (one label);
* 2x1 collages of photos of two different species (both labels);
* 2x1 collages of two photos of one species (one label).

Test photos appear only in the test images. Every method scores the same
test images, with the same metric (`tftransfer.reports.label_report`: mAP, and
micro F1 at each method's thresholds). Base: the shared MobileNetV2 at 160 px.

Methods:

* `defaults`: `tftransfer.load_data(labels.csv)`, `build_classifier(...,
  multi_label=True)`, `fine_tune` with every default (3 seeds);
* `keras_recipe`: the Keras guide "Transfer learning & fine-tuning"
  written for multi-label data as its users write it: a tf.data pipeline
  from the CSV (decode, resize, cache), flip and rotation augmentation, a
  Dense sigmoid head with binary cross-entropy, Adam 1e-3 for 20 epochs on
  the frozen base, then the whole base unfrozen (BatchNorm in inference
  mode) at Adam 1e-5 for 10 more epochs; thresholds 0.5. Scored at its
  better phase, on the test images, which favours it (2 seeds).

Each run's wall time covers reading the data, building the model and
training; every tftransfer run starts with an empty feature cache.

Usage:
    python bench/multilabel.py            # everything, about 40 min on 2 cores
    python bench/multilabel.py --quick    # one seed each, fewer images

Writes `bench/results/multilabel.jsonl` (every run, appended as it ends)
and `bench/results/multilabel.md` (the table and the goals).
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

import tftransfer  # noqa: E402
from tftransfer.reports.label_report import multi_label_report  # noqa: E402

# The same photos, base and size as the single-label benchmark.
from quality_oxford17 import FLOWERS, ROOT, SIZE, TEST_PER_CLASS as TEST_PER_SPECIES, WEIGHTS  # noqa: E402,E501
#: Images of each kind: (singles, two-species collages, one-species collages).
KINDS = {"train": (340, 340, 85), "test": (170, 170, 34)}
QUICK_KINDS = {"train": (170, 170, 34), "test": (85, 85, 17)}
SEEDS = {"defaults": 3, "keras_recipe": 2}


def species_photos(seed):
    """`{species: (train photos, test photos)}`, split with `seed`."""
    rng = np.random.default_rng(seed)
    split = {}
    for folder in sorted(p for p in FLOWERS.iterdir() if p.is_dir()):
        photos = sorted(folder.glob("*.jpg"))
        order = [photos[i] for i in rng.permutation(len(photos))]
        split[folder.name] = (order[TEST_PER_SPECIES:], order[:TEST_PER_SPECIES])
    return split


def collage(first, second):
    """Two photos side by side, each at SIZE x SIZE."""
    halves = [np.asarray(Image.open(p).convert("RGB").resize((SIZE, SIZE))) for p in
              (first, second)]
    return Image.fromarray(np.concatenate(halves, axis=1))


def write_split(folder, photos, kinds, rng):
    """Writes one split's images and `labels.csv`; returns the CSV's path."""
    folder.mkdir(parents=True)
    names = sorted(photos)
    rows = ["path,labels"]
    singles, pairs, doubles = kinds
    for i in range(singles):
        name = names[i % len(names)]
        photo = photos[name][rng.integers(len(photos[name]))]
        Image.open(photo).convert("RGB").save(folder / f"single{i:04d}.jpg", quality=92)
        rows.append(f"single{i:04d}.jpg,{name}")
    for i in range(pairs):
        a, b = rng.choice(len(names), 2, replace=False)
        pa, pb = (photos[names[k]][rng.integers(len(photos[names[k]]))] for k in (a, b))
        collage(pa, pb).save(folder / f"pair{i:04d}.jpg", quality=92)
        rows.append(f"pair{i:04d}.jpg,{names[a]} {names[b]}")
    for i in range(doubles):
        name = names[i % len(names)]
        pa, pb = rng.choice(len(photos[name]), 2, replace=False)
        collage(photos[name][pa], photos[name][pb]).save(folder / f"double{i:04d}.jpg",
                                                         quality=92)
        rows.append(f"double{i:04d}.jpg,{name}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


def build_data(root, kinds, seed=0):
    """Writes `root/train` and `root/test`; returns their CSV paths."""
    split = species_photos(seed)
    rng = np.random.default_rng(seed)
    train = write_split(root / "train", {k: v[0] for k, v in split.items()}, kinds["train"],
                        rng)
    test = write_split(root / "test", {k: v[1] for k, v in split.items()}, kinds["test"], rng)
    return train, test


def run_defaults(train_csv, test_csv, seed):
    keras.utils.set_random_seed(seed)
    base = tftransfer.load_base("mobilenet_v2", weights=str(WEIGHTS), input_size=SIZE)
    data = tftransfer.load_data(str(train_csv), base.input_size, seed=seed)
    model = tftransfer.build_classifier(base, len(data.class_names), multi_label=True)
    with tempfile.TemporaryDirectory() as cache:
        history = tftransfer.fine_tune(model, data.train, data.validation, verbose=0,
                                       options=tftransfer.RunOptions(feature_cache=cache,
                                                                     seed=seed))
    seconds = time.perf_counter()
    report = tftransfer.evaluate(model, str(test_csv))
    return {"map": report.mean_average_precision, "micro_f1": report.micro_f1,
            "kept_phase": history.kept_phase, "unfrozen": history.unfrozen,
            "head_epochs": history.head_epochs,
            "top_epochs": len(history.top.epoch) if history.top else 0,
            "scoring_seconds": time.perf_counter() - seconds}


def csv_dataset(csv_path, names, training, seed):
    """The recipe's input pipeline: the CSV's files decoded, resized and cached."""
    rows = [line.split(",") for line in csv_path.read_text().splitlines()[1:]]
    paths = [str(csv_path.parent / path) for path, _ in rows]
    hot = np.array([[float(n in labels.split()) for n in names] for _, labels in rows],
                   "float32")

    def load(path, labels):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize(image, (SIZE, SIZE)), labels

    ds = tf.data.Dataset.from_tensor_slices((paths, hot)).map(load, tf.data.AUTOTUNE)
    ds = ds.cache()
    if training:
        ds = ds.shuffle(len(paths), seed=seed)
    return ds.batch(32).prefetch(tf.data.AUTOTUNE), hot


def run_keras_recipe(train_csv, test_csv, seed):
    keras.utils.set_random_seed(seed)
    names = sorted({n for line in train_csv.read_text().splitlines()[1:]
                    for n in line.split(",")[1].split()})
    train, _ = csv_dataset(train_csv, names, True, seed)
    test, test_hot = csv_dataset(test_csv, names, False, seed)
    base = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), include_top=False,
                                          weights=None)
    base.load_weights(WEIGHTS)
    base.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.Sequential([keras.layers.RandomFlip("horizontal"),
                          keras.layers.RandomRotation(0.1)])(inputs)
    x = keras.applications.mobilenet_v2.preprocess_input(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(len(names), activation="sigmoid")(x))
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    model.fit(train, epochs=20, verbose=0)
    frozen = multi_label_report(test_hot, model.predict(test, verbose=0), names)
    base.trainable = True
    model.compile(keras.optimizers.Adam(1e-5), "binary_crossentropy")
    model.fit(train, epochs=10, verbose=0)
    tuned = multi_label_report(test_hot, model.predict(test, verbose=0), names)
    better = max((frozen, tuned), key=lambda r: r.mean_average_precision)
    return {"map": better.mean_average_precision, "micro_f1": better.micro_f1,
            "frozen_map": frozen.mean_average_precision,
            "fine_tuned_map": tuned.mean_average_precision}


METHODS = {"defaults": run_defaults, "keras_recipe": run_keras_recipe}


def summarise(runs):
    """The table and one line per goal, as markdown."""
    lines = ["| method | seeds | mAP (mean) | mAPs | micro F1 (mean) | seconds (median) |",
             "|---|---|---|---|---|---|"]
    stats = {}
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        maps = [r["map"] for r in mine]
        stats[method] = (statistics.mean(maps),
                         statistics.median(r["seconds"] for r in mine))
        lines.append(f"| {method} | {len(mine)} | {100 * stats[method][0]:.1f} | "
                     f"{', '.join(f'{100 * m:.1f}' for m in maps)} | "
                     f"{100 * statistics.mean(r['micro_f1'] for r in mine):.1f} | "
                     f"{stats[method][1]:.0f} |")
    if len(stats) == 2:
        gain = 100 * (stats["defaults"][0] - stats["keras_recipe"][0])
        ratio = stats["defaults"][1] / stats["keras_recipe"][1]
        lines += ["", f"- mAP: defaults {gain:+.1f} points over the recipe's better phase "
                  f"(goal >= +3.0): {'met' if gain >= 3 else 'NOT met'}",
                  f"- time: defaults at {ratio:.2f}x the recipe's (goal <= 0.35x): "
                  f"{'met' if ratio <= 0.35 else 'NOT met'}"]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one seed per method, half the images")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--output", default=str(ROOT / "results" / "multilabel"))
    args = parser.parse_args()
    if not FLOWERS.is_dir() or not WEIGHTS.is_file():
        raise SystemExit(f"needs {FLOWERS} and {WEIGHTS}")
    methods = args.methods.split(",")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    results = output.with_suffix(".jsonl")
    results.write_text("")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        train_csv, test_csv = build_data(Path(scratch), QUICK_KINDS if args.quick else KINDS)
        # Interleaved, so that the machine's drift over the run falls on both.
        rounds = max(SEEDS[m] for m in methods) if not args.quick else 1
        for seed in range(rounds):
            for method in methods:
                if seed >= SEEDS[method]:
                    continue
                start = time.perf_counter()
                result = METHODS[method](train_csv, test_csv, seed)
                result.update(method=method, seed=seed,
                              seconds=time.perf_counter() - start, commit=commit)
                runs.append(result)
                with results.open("a") as out:
                    out.write(json.dumps(result) + "\n")
                print(f"{method} seed {seed}: mAP {100 * result['map']:.1f}, "
                      f"{result['seconds']:.0f} s", flush=True)
    kinds = QUICK_KINDS if args.quick else KINDS
    table = (f"# Multi-label: oxford17 collages, MobileNetV2-160 (commit {commit})\n\n"
             f"Train images (singles, two-species collages, one-species collages): "
             f"{kinds['train']}; test: {kinds['test']}. `python bench/multilabel.py"
             f"{' --quick' if args.quick else ''}`.\n\n" + summarise(runs) + "\n")
    output.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
