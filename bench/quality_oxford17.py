"""Transfer quality on real photos: tftransfer's defaults against published recipes.

Data: `../shared/datasets/oxford17_flowers` (17 classes x 80 photos), split
once with seed 0 into 20 test photos per class and 10 or 60 training photos
per class (the 10 are the first 10 of the 60). Every method scores the same
test photos. Base: the shared MobileNetV2 at 160 px.

Methods:

* `scratch`: a small CNN trained from random weights at 64 px (flip
  augmentation, Adam 1e-3, at most 30 epochs, early stopping on a 20%
  validation split), the baseline that transfer has to beat;
* `features`: tftransfer feature extraction only (phase 1, no phase 2);
* `defaults`: `tftransfer train`'s defaults, through the Python API;
* `unfreeze20`: the defaults before this benchmark: `unfreeze=20` at 1e-5,
  no augmentation (to show that `unfreeze="auto"` is at least as good);
* `auto_lr`: the defaults with `head_learning_rate="auto"` (the range test);
* `tf_tutorial`: TensorFlow's "Transfer learning and fine-tuning" tutorial
  as published (flip + rotation 0.2; Adam 1e-4 for 10 frozen epochs;
  unfreeze from layer 100; RMSprop 1e-5 for 10 more epochs);
* `keras_guide`: the Keras guide "Transfer learning & fine-tuning" (same
  augmentation; Adam 1e-3 for 20 frozen epochs; the whole base unfrozen
  with BatchNorm in inference mode; Adam 1e-5 for 10 more epochs).

A recipe is scored at its better phase (frozen or fine-tuned), on the test
set, which favours it. The issue's methods run 3 seeds (tftransfer) or 2
(the recipes, which are slow); the two ablations, `unfreeze20` and
`auto_lr`, run 2.
Each run's wall time covers loading the data, building the model and
training; every tftransfer run starts with an empty feature cache.

Usage:
    python bench/quality_oxford17.py            # everything, about 90 min on 2 cores
    python bench/quality_oxford17.py --quick    # one seed, 60 photos per class
    python bench/quality_oxford17.py --methods defaults --sizes 60 --seeds 1

Writes `bench/results/quality_oxford17.json` (every run, rewritten after each one),
`quality_oxford17.md` (the table) and `quality_oxford17.png` (the plot).
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tftransfer  # noqa: E402

ROOT = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("TFTRANSFER_SHARED", ROOT.parent.parent / "shared"))
FLOWERS = SHARED / "datasets" / "oxford17_flowers"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_160_stanford_dogs.weights.h5"
SIZE = 160
TEST_PER_CLASS = 20
TFTRANSFER_METHODS = ("scratch", "features", "defaults", "unfreeze20", "auto_lr")
RECIPES = ("tf_tutorial", "keras_guide")
SEEDS = {"tf_tutorial": 2, "keras_guide": 2, "unfreeze20": 2, "auto_lr": 2}


def split_folder(root, train_per_class, seed=0):
    """Links a seeded split of FLOWERS into `root/train/` and `root/test/`."""
    rng = random.Random(seed)
    for class_dir in sorted(p for p in FLOWERS.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.is_file())
        rng.shuffle(files)
        test, train = files[:TEST_PER_CLASS], files[TEST_PER_CLASS:]
        for split, chosen in (("test", test), ("train", train[:train_per_class])):
            target = root / split / class_dir.name
            target.mkdir(parents=True)
            for file in chosen:
                (target / file.name).symlink_to(file)
    return root


def run_tftransfer(method, folder, seed):
    """Trains with tftransfer's defaults (`features`: phase 1 only)."""
    keras.utils.set_random_seed(seed)
    base = tftransfer.load_base("mobilenet_v2", weights=str(WEIGHTS), input_size=SIZE)
    data = tftransfer.load_data(str(folder), base.input_size, seed=seed)
    Phase = tftransfer.Phase
    head, top, augmentation = Phase.head(), Phase.top(), "auto"
    if method == "features":
        top = Phase.top(epochs=0)
    elif method == "unfreeze20":
        top, augmentation = Phase.top(unfreeze=20, learning_rate=1e-5), None
    elif method == "auto_lr":
        head = Phase.head(learning_rate="auto")
    model = tftransfer.build_classifier(base, len(data.class_names),
                                        augmentation=augmentation)
    with tempfile.TemporaryDirectory() as cache:
        history = tftransfer.fine_tune(model, data.train, data.validation, head=head,
                                       top=top, verbose=0,
                                       options=tftransfer.RunOptions(feature_cache=cache,
                                                                     seed=seed))
    accuracy = model.evaluate(data.test, verbose=0, return_dict=True)["accuracy"]
    return {"accuracy": accuracy, "kept_phase": history.kept_phase,
            "unfrozen": history.unfrozen, "head_learning_rate": history.head_learning_rate,
            "head_epochs": history.head_epochs,
            "top_epochs": len(history.top.epoch) if history.top else 0}


def run_scratch(folder, seed):
    """A small CNN from random weights, the baseline transfer has to beat."""
    keras.utils.set_random_seed(seed)
    data = tftransfer.load_data(str(folder), (64, 64), seed=seed)
    layers = [keras.Input((64, 64, 3)), keras.layers.Rescaling(1 / 255),
              keras.layers.RandomFlip("horizontal")]
    for filters in (32, 64, 128):
        layers += [keras.layers.Conv2D(filters, 3, padding="same", use_bias=False),
                   keras.layers.BatchNormalization(), keras.layers.ReLU(),
                   keras.layers.MaxPooling2D()]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.3),
               keras.layers.Dense(len(data.class_names), activation="softmax")]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(data.train, validation_data=data.validation, epochs=30, verbose=0,
              callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=5,
                                                       restore_best_weights=True)])
    return {"accuracy": model.evaluate(data.test, verbose=0, return_dict=True)["accuracy"]}


def run_recipe(method, folder, seed):
    """A published recipe, written as its page writes it (`bench/quality.py`'s)."""
    from quality import run_recipe as recipe

    return recipe(method, "mobilenet_v2", folder, seed)


def run(method, folder, seed):
    start = time.perf_counter()
    if method == "scratch":
        result = run_scratch(folder, seed)
    elif method in RECIPES:
        result = run_recipe(method, folder, seed)
    else:
        result = run_tftransfer(method, folder, seed)
    result["seconds"] = time.perf_counter() - start
    keras.backend.clear_session()
    return result


def summarise(runs, methods, sizes):
    """The table: mean +- sd accuracy and median wall time per method and size."""
    rows = ["| method | " + " | ".join(f"{s}/class: accuracy | {s}/class: time"
                                       for s in sizes) + " |",
            "|---|" + "---|---|" * len(sizes)]
    for method in methods:
        cells = []
        for size in sizes:
            chosen = [r for r in runs if r["method"] == method and r["size"] == size]
            if not chosen:
                cells += ["", ""]
                continue
            accuracy = [100 * r["accuracy"] for r in chosen]
            sd = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
            cells += [f"{statistics.mean(accuracy):.1f}% ± {sd:.1f} (n={len(chosen)})",
                      f"{statistics.median(r['seconds'] for r in chosen):.0f} s"]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def goals(runs, sizes):
    """The issue's three goals, checked on this run's figures."""
    def stat(method, size, key, fn):
        values = [r[key] for r in runs if r["method"] == method and r["size"] == size]
        return fn(values) if values else None

    lines = []
    for size in sizes:
        ours = stat("defaults", size, "accuracy", statistics.mean)
        recipes = [stat(m, size, "accuracy", statistics.mean) for m in RECIPES]
        recipes = [r for r in recipes if r is not None]
        if ours is None:
            continue
        if size == 60:
            lines.append(f"- 60/class: defaults {100 * ours:.1f}% (goal >= 95%)")
        if recipes:
            lines.append(f"- {size}/class: defaults - best recipe = "
                         f"{100 * (ours - max(recipes)):+.1f} points (goal >= +2)")
        ours_time = stat("defaults", size, "seconds", statistics.median)
        recipe_times = [stat(m, size, "seconds", statistics.median) for m in RECIPES]
        recipe_times = [t for t in recipe_times if t is not None]
        if recipe_times:
            lines.append(f"- {size}/class: defaults' time / faster recipe's = "
                         f"{ours_time / min(recipe_times):.2f} (goal <= 0.35)")
    return "\n".join(lines)


def plot(runs, methods, sizes, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    markers = "osD^vPX"
    for marker, method in zip(markers, methods):
        for size, fill in zip(sizes, ("none", "full")):
            chosen = [r for r in runs if r["method"] == method and r["size"] == size]
            if chosen:
                ax.scatter([r["seconds"] for r in chosen],
                           [100 * r["accuracy"] for r in chosen], marker=marker,
                           facecolors="none" if fill == "none" else None,
                           edgecolors=f"C{methods.index(method)}",
                           color=f"C{methods.index(method)}",
                           label=f"{method}, {size}/class")
    ax.set_xscale("log")
    ax.set_xlabel("wall time (s, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("oxford17 flowers, MobileNetV2-160, 2 CPU cores")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def measure(methods, sizes, args, output):
    """Runs every method, a pass over all methods and sizes per seed.

    Seeds go outermost, so that a run cut short still has every method at
    both sizes; `quality_oxford17.json` is rewritten after each training, and
    `--resume` goes on from it.
    """
    runs = json.loads((output / "quality_oxford17.json").read_text()) if args.resume else []
    done = {(r["method"], r["size"], r["seed"]) for r in runs}
    seeds = {m: 1 if args.quick else args.seeds or SEEDS.get(m, 3) for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {size: split_folder(Path(tmp) / str(size), size) for size in sizes}
        for seed in range(max(seeds.values())):
            for size in sizes:
                for method in methods:
                    if seed >= seeds[method] or (method, size, seed) in done:
                        continue
                    result = run(method, folders[size], seed)
                    runs.append({"method": method, "size": size, "seed": seed, **result})
                    print(json.dumps(runs[-1]), flush=True)
                    (output / "quality_oxford17.json").write_text(json.dumps(runs, indent=1))
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one seed, 60 photos per class")
    parser.add_argument("--methods", default=",".join(TFTRANSFER_METHODS + RECIPES))
    parser.add_argument("--sizes", default="10,60")
    parser.add_argument("--seeds", type=int, help="seeds per method (default 3, recipes 2)")
    parser.add_argument("--output", default=str(ROOT / "results"))
    parser.add_argument("--resume", action="store_true",
                        help="keep the output folder's quality_oxford17.json and run only what "
                             "it lacks (a run that was cut short)")
    parser.add_argument("--summarise", action="store_true",
                        help="only rebuild quality.md and quality.png from the output "
                             "folder's quality_oxford17.json (e.g. of a run that was cut short)")
    args = parser.parse_args()
    if not (FLOWERS.is_dir() and WEIGHTS.is_file()):
        print(f"skipped: {FLOWERS} or {WEIGHTS} is not there; set TFTRANSFER_SHARED to the shared folder")
        return 0
    methods = [m.strip() for m in args.methods.split(",")]
    sizes = [60] if args.quick else [int(s) for s in args.sizes.split(",")]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    if args.summarise:
        runs = json.loads((output / "quality_oxford17.json").read_text())
    else:
        runs = measure(methods, sizes, args, output)
    table = summarise(runs, methods, sizes)
    report = f"{table}\n\n{goals(runs, sizes)}\n"
    print(report)
    (output / "quality_oxford17.md").write_text(report)
    plot(runs, methods, sizes, output / "quality_oxford17.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
