"""Transfer quality over data cuts and bases: tftransfer against the published recipes.

Cells, each with a fixed split (seed 0) and its own test set:

* `oxford17-10`, `oxford17-60`: oxford17 flowers, 10 or 60 training photos
  per class, 20 test photos per class;
* `clothing-20`: clothing_small, 20 training photos per class, its test/;
* `eurosat-20`, `eurosat-100`: EuroSAT RGB satellite tiles (a far domain),
  20 or 100 training tiles per class, its test/ (100 per class);
* `dress-skirt-40`: clothing's dress and skirt, 40 training photos each;
* `sunflower-bluebell-60` (outside the table and the sweep; `--cells
  sunflower-bluebell-60`): two oxford17 classes that frozen features tell
  apart, so that the evidence skips the top phase and the cost of such a
  run is measured; `shoes-pants` (the same, outside the table): clothing's
  shoes and pants, every training photo, its test/, a cell large enough
  that the run's fixed costs (tracing) are a small part of it.

Bases: `mobilenet_v2` (the shared MobileNetV2-160), `lite0` (the shared
EfficientNet-Lite0 `.keras`), `lite0-hub` (its TF Hub copy; oxford17-60 and
eurosat-100 only).

Methods:

* `defaults`: `fine_tune`'s defaults;
* `features`: the head alone (`top=Phase.top(epochs=0)`);
* `deeper`: the defaults with the top phase as deep as `unfreeze="auto"`
  makes it from 100 images per class (half the backbone), for the rule of
  how deep it goes (outside the table);
* `probe`: the evidence behind the defaults: the top phase forced on (a
  quarter of the backbone), recording the evidence measure, and the test
  and validation predictions of the head phase's weights, the top phase's
  and their average (WiSE-FT), so that rules can be scored offline
  (`bench/keep_rules.py`);
* `tf_tutorial`, `keras_guide`: TensorFlow's and Keras's published
  recipes, at their better phase on the test set (which favours them).
  They do not change when tftransfer does: run them once and keep them.

Every (cell, base) also times one extraction pass (the features model over
the training images) in the same process, so that runs made on a slower
or faster day compare in units of that pass.

Usage:
    python bench/quality.py --methods defaults,features --seeds 2
    python bench/quality.py --methods probe --bases mobilenet_v2 --seeds 2
    python bench/quality.py --methods tf_tutorial,keras_guide --seeds 1 --resume
    python bench/quality.py --summarise

Appends every run to `bench/results/quality.jsonl` (with the commit), and
writes `bench/results/quality.md`. `--resume` skips runs already there.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tftransfer  # noqa: E402
from tftransfer.training.auto import auto_unfreeze  # noqa: E402
from tftransfer.training.evidence import measure_evidence  # noqa: E402

ROOT = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("TFTRANSFER_SHARED", ROOT.parent.parent / "shared"))
DATASETS = SHARED / "datasets"
FLOWERS = DATASETS / "oxford17_flowers"
CLOTHING = DATASETS / "clothing_small"
EUROSAT = DATASETS / "eurosat_rgb"
MOBILENET = SHARED / "weights" / "mobilenet_v2_160_stanford_dogs.weights.h5"
LITE0 = SHARED / "weights" / "efficientnet_lite0_imagenet.keras"
LITE0_HUB = SHARED / "weights" / "efficientnet_lite0_imagenet_hub"
RESULTS = ROOT / "results" / "quality.jsonl"
#: The probe's pooled features, for scoring other evidence measures offline.
FEATURES = Path(os.environ.get("TFTRANSFER_BENCH_FEATURES", "/tmp/tftransfer-bench-features"))
TEST_PER_CLASS = 20
RECIPES = ("tf_tutorial", "keras_guide")
HUB_CELLS = ("oxford17-60", "eurosat-100")


def link(files, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        (folder / file.name).symlink_to(file)


def flowers(root, per_class, seed=0, classes=None):
    """oxford17: 20 test photos per class and the first `per_class` of the rest."""
    rng = random.Random(seed)
    for class_dir in sorted(p for p in FLOWERS.iterdir() if p.is_dir()):
        if classes and class_dir.name not in classes:
            continue
        files = sorted(p for p in class_dir.iterdir() if p.is_file())
        rng.shuffle(files)
        link(files[:TEST_PER_CLASS], root / "test" / class_dir.name)
        link(files[TEST_PER_CLASS:TEST_PER_CLASS + per_class], root / "train" / class_dir.name)
    return root


def published_split(dataset, root, per_class, classes=None, seed=0):
    """`per_class` of each class's train/ photos (seeded; `None`: all), and all of its test/."""
    rng = random.Random(seed)
    for class_dir in sorted(p for p in (dataset / "train").iterdir() if p.is_dir()):
        if classes and class_dir.name not in classes:
            continue
        files = sorted(class_dir.iterdir())
        rng.shuffle(files)
        link(files[:per_class], root / "train" / class_dir.name)
        link(sorted((dataset / "test" / class_dir.name).iterdir()),
             root / "test" / class_dir.name)
    return root


CELLS = {
    "oxford17-10": lambda root: flowers(root, 10),
    "oxford17-60": lambda root: flowers(root, 60),
    "clothing-20": lambda root: published_split(CLOTHING, root, 20),
    "eurosat-20": lambda root: published_split(EUROSAT, root, 20),
    "eurosat-100": lambda root: published_split(EUROSAT, root, 100),
    "dress-skirt-40": lambda root: published_split(CLOTHING, root, 40, ("dress", "skirt")),
}
#: Outside the goal table and the sweep: a cell easy enough that the evidence
#: skips the top phase, for the cost goal of such runs (`cost_lines`).
EASY_CELLS = {
    "sunflower-bluebell-60": lambda root: flowers(root, 60, classes=("04_bluebell",
                                                                     "10_sunflower")),
    "shoes-pants": lambda root: published_split(CLOTHING, root, None, ("pants", "shoes")),
}
BASES = ("mobilenet_v2", "lite0", "lite0-hub")


def load_base(name):
    if name == "mobilenet_v2":
        return tftransfer.load_base("mobilenet_v2", weights=str(MOBILENET), input_size=160)
    if name == "lite0":
        return tftransfer.load_base(str(LITE0))
    return tftransfer.load_base(str(LITE0_HUB), input_size=224)


def extraction_pass(base, folder, repeats=3):
    """Seconds of one pass of the features model over the training images.

    The fastest of `repeats` warm passes: the first `predict` also traces its
    function, a fixed cost that would make small cells' unit noisy.
    """
    model = tftransfer.build_classifier(base, 2, augmentation=None)
    features = model.get_layer("features")
    data = tftransfer.load_data(str(folder), base.input_size, seed=0, validation_split=0.0)
    features.predict(data.train.take(1), verbose=0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        features.predict(data.train, verbose=0)
        times.append(time.perf_counter() - start)
    return min(times)


class PhaseWeights(keras.callbacks.Callback):
    """Snapshots the whole classifier's weights when the top phase starts and ends."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier, self.fits, self.head, self.top = classifier, 0, None, None

    def on_train_begin(self, logs=None):
        self.fits += 1
        if self.fits == 2:  # The head phase's best weights are back by now.
            self.head = self.classifier.get_weights()

    def on_train_end(self, logs=None):
        if self.fits == 2:
            self.top = self.classifier.get_weights()


def predictions(model, dataset):
    labels, probabilities = [], []
    for images, batch_labels in dataset:
        probabilities.append(model(images, training=False).numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(labels), np.concatenate(probabilities)


def scored(model, weights, data):
    """Test accuracy and per-image validation (right, loss) of some weights."""
    model.set_weights(weights)
    test_labels, test_probabilities = predictions(model, data.test)
    val_labels, val_probabilities = predictions(model, data.validation)
    picked = val_probabilities[np.arange(len(val_labels)), val_labels]
    return {"test_accuracy": float((test_probabilities.argmax(1) == test_labels).mean()),
            "val_right": (val_probabilities.argmax(1) == val_labels).astype(int).tolist(),
            "val_loss": np.round(-np.log(np.maximum(picked, 1e-7)), 5).tolist()}


def evidence_of(model, data, keep=None):
    """The evidence measure on the training and validation images, unaugmented.

    `keep`: an `.npz` path where the pooled features and labels are kept, so
    that other measures can be scored on them offline.
    """
    features = model.get_layer("features")
    rows, labels = [], []
    for split in (data.train, data.validation):
        for images, batch_labels in split:
            rows.append(features(images, training=False).numpy())
            labels.append(batch_labels.numpy())
    rows, labels = np.concatenate(rows), np.concatenate(labels)
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        np.savez(keep, features=rows.astype(np.float16), labels=labels,
                 validation_rows=sum(int(b.shape[0]) for _, b in data.validation))
    evidence = measure_evidence(rows, labels, len(data.class_names))
    return evidence.to_dict() if evidence else None


def run_tftransfer(method, base_name, folder, seed):
    keras.utils.set_random_seed(seed)
    base = load_base(base_name)
    data = tftransfer.load_data(str(folder), base.input_size, seed=seed)
    model = tftransfer.build_classifier(base, len(data.class_names))
    top, callbacks = tftransfer.Phase.top(), []
    if method == "features":
        top = tftransfer.Phase.top(epochs=0)
    elif method == "deeper":
        top = tftransfer.Phase.top(unfreeze=auto_unfreeze(model, 200))
    elif method == "probe":
        quarter = auto_unfreeze(model, 50) or 1
        top = tftransfer.Phase.top(unfreeze=quarter)
        callbacks = [PhaseWeights(model)]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        history = tftransfer.fine_tune(model, data.train, data.validation, top=top,
                                       callbacks=callbacks, verbose=0,
                                       options=tftransfer.RunOptions(feature_cache=cache,
                                                                     seed=seed))
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "kept_phase": history.kept_phase,
              "unfrozen": history.unfrozen, "head_epochs": history.head_epochs,
              "validation_rows": history.plan.validation.rows,
              "train_counts": list(history.plan.train.counts),
              "evidence": getattr(history, "evidence", None) and history.evidence.to_dict(),
              "decisions": getattr(history, "decisions", None)}
    if method == "probe" and callbacks[0].top is not None:
        snap = callbacks[0]
        wise = [(a + b) / 2 if np.issubdtype(a.dtype, np.floating) else b
                for a, b in zip(snap.head, snap.top)]
        model.set_weights(snap.head)
        result["evidence"] = result["evidence"] or evidence_of(
            model, data, FEATURES / f"{folder.name}-{base_name}-{seed}.npz")
        result.update({name: scored(model, weights, data)
                       for name, weights in (("head", snap.head), ("top", snap.top),
                                             ("wise", wise))})
        result["test_accuracy"] = result["top"]["test_accuracy"]
    else:
        result["test_accuracy"] = model.evaluate(data.test, verbose=0,
                                                 return_dict=True)["accuracy"]
    return result


def run_recipe(method, base_name, folder, seed):
    """A published recipe as its page writes it, on this base."""
    keras.utils.set_random_seed(seed)
    size = 160 if base_name == "mobilenet_v2" else 224
    load = dict(image_size=(size, size), batch_size=32, seed=seed)
    train = keras.utils.image_dataset_from_directory(folder / "train", shuffle=True,
                                                     verbose=False, **load)
    test = keras.utils.image_dataset_from_directory(folder / "test", shuffle=False,
                                                    verbose=False, **load)
    num_classes = len(train.class_names)
    train = train.prefetch(2)
    augmentation = keras.Sequential([keras.layers.RandomFlip("horizontal"),
                                     keras.layers.RandomRotation(0.2)])
    if base_name == "mobilenet_v2":
        base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False,
                                              weights=None)
        base.load_weights(MOBILENET)
        scale = keras.applications.mobilenet_v2.preprocess_input
    else:  # Lite0's scaling is its first layer, and it pools itself.
        base = keras.saving.load_model(LITE0)
        scale = None
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    x = augmentation(inputs)
    x = scale(x) if scale else x
    x = base(x, training=False)
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(num_classes)(x))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    tutorial = method == "tf_tutorial"
    start = time.perf_counter()
    model.compile(keras.optimizers.Adam(1e-4 if tutorial else 1e-3), loss,
                  metrics=["accuracy"])
    model.fit(train, epochs=10 if tutorial else 20, verbose=0)
    frozen = model.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    frozen_seconds = time.perf_counter() - start
    base.trainable = True
    if tutorial:
        for layer in base.layers[:100]:
            layer.trainable = False
        optimizer = keras.optimizers.RMSprop(1e-5)
    else:
        optimizer = keras.optimizers.Adam(1e-5)
    model.compile(optimizer, loss, metrics=["accuracy"])
    model.fit(train, epochs=10, verbose=0)
    tuned = model.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    return {"test_accuracy": max(frozen, tuned), "frozen_accuracy": frozen,
            "fine_tuned_accuracy": tuned, "frozen_seconds": frozen_seconds,
            "seconds": time.perf_counter() - start}


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return None


def load_runs(path=RESULTS):
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean(values):
    return statistics.mean(values) if values else None


def cell_figures(runs, cell, base):
    """Per method: mean test accuracy (%), and median seconds in extraction passes."""
    figures = {}
    for method in ("defaults", "features", "probe") + RECIPES:
        chosen = [r for r in runs if (r["cell"], r["base"], r["method"]) == (cell, base, method)]
        if chosen:
            figures[method] = {
                "accuracy": 100 * mean([r["test_accuracy"] for r in chosen]),
                "each": [round(100 * r["test_accuracy"], 1) for r in chosen],
                "passes": statistics.median(r["seconds"] / r["pass_seconds"] for r in chosen),
                "seconds": statistics.median(r["seconds"] for r in chosen)}
    return figures


def summarise(runs):
    """The table of every cell, and the issue's goal lines."""
    lines = ["| cell | base | defaults | features | best recipe (better phase) | "
             "defaults − max(recipe, features) | time: defaults / faster recipe (passes) |",
             "|---|---|---|---|---|---|---|"]
    gaps_vs_recipe, worst, ratios = [], [], []
    for cell in CELLS:
        for base in BASES:
            f = cell_figures(runs, cell, base)
            if not f:
                continue
            ours, head = f.get("defaults"), f.get("features")
            recipes = [dict(f[m], name=m) for m in RECIPES if m in f]
            best = max(recipes, key=lambda r: r["accuracy"]) if recipes else None
            faster = min(recipes, key=lambda r: r["passes"]) if recipes else None
            cells = []
            for fig in (ours, head):
                cells.append(f"{fig['accuracy']:.1f}% {fig['each']}, {fig['passes']:.1f} passes"
                             if fig else "not run")
            cells.append(f"{best['accuracy']:.1f}% ({best['name']}"
                         + ("; the other not run)" if len(recipes) < len(RECIPES) else ")")
                         if best else "not run")
            bar = max([x["accuracy"] for x in (best, head) if x] or [math_nan()])
            if ours and (best or head):
                worst.append(ours["accuracy"] - bar)
                cells.append(f"{ours['accuracy'] - bar:+.1f}")
            else:
                cells.append("")
            if ours and best and len(recipes) == len(RECIPES):  # Both recipes ran.
                gaps_vs_recipe.append(ours["accuracy"] - best["accuracy"])
            if ours and faster:
                ratios.append(ours["passes"] / faster["passes"])
                cells.append(f"{ours['passes'] / faster['passes']:.2f}")
            else:
                cells.append("")
            lines.append(f"| {cell} | {base} | " + " | ".join(cells) + " |")
    lines.append("")
    if worst:
        lines.append(f"- Every cell ≥ max(best recipe, head alone) − 0.5: worst cell "
                     f"{min(worst):+.1f} points ({sum(w >= -0.5 for w in worst)} of "
                     f"{len(worst)} cells meet it)")
    if gaps_vs_recipe:
        lines.append(f"- Mean over cells where both recipes ran, defaults − best recipe: "
                     f"{statistics.mean(gaps_vs_recipe):+.1f} points (goal ≥ +2; "
                     f"{len(gaps_vs_recipe)} cells)")
    if ratios:
        lines.append(f"- Time, defaults / faster recipe in extraction passes: worst "
                     f"{max(ratios):.2f} (goal ≤ 0.5; {len(ratios)} cells)")
    lines += cost_lines(runs)
    return "\n".join(lines) + "\n"


def cost_lines(runs):
    """The issue's cost goals: the sweep's minutes, the evidence step's share of a run."""
    every = [r for r in runs if r["method"] in ("defaults", "features")]
    ours = [r for r in every if r["cell"] in CELLS]
    lines = [f"- tftransfer's sweep (defaults and features, every cell and seed): "
             f"{sum(r['seconds'] for r in ours) / 60:.1f} min (goal ≤ 75)"] if ours else []
    weighed = [(r["evidence"]["seconds"] / r["seconds"], r) for r in ours
               if r["method"] == "defaults" and (r.get("evidence") or {}).get("seconds")]
    if weighed:
        share, worst = max(weighed, key=lambda x: x[0])
        lines.append(f"- The evidence step: at most {100 * share:.1f}% of a run "
                     f"({worst['cell']}, {worst['base']}; goal ≤ 10%)")
    skipped = {}
    for r in every:
        if r["method"] == "defaults" and any(d.startswith("top phase: skipped")
                                             for d in r.get("decisions") or []):
            skipped.setdefault((r["cell"], r["base"], sum(r["train_counts"])), []).append(
                r["seconds"] / r["pass_seconds"])
    if skipped:
        # Per cell: on a cell of a hundred photos the fixed costs (tracing the
        # extractor and the head's training step) outweigh a pass.
        each = "; ".join(f"{cell} {base} ({rows} training images) "
                         f"{statistics.median(passes):.1f}"
                         for (cell, base, rows), passes in sorted(skipped.items()))
        lines.append(f"- Where the evidence skipped the top phase, median passes per cell "
                     f"(goal ≤ 3, start-up aside): {each}")
    else:
        lines.append("- The evidence skipped the top phase in no cell (every headroom ≥ 0.04)")
    return lines


def math_nan():
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--bases", default="mobilenet_v2,lite0,lite0-hub")
    parser.add_argument("--methods", default="defaults,features")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--resume", action="store_true",
                        help="skip the runs that quality.jsonl already has")
    parser.add_argument("--summarise", action="store_true",
                        help="only rewrite quality.md from quality.jsonl")
    args = parser.parse_args()
    if not (FLOWERS.is_dir() and MOBILENET.is_file()):
        print(f"skipped: {SHARED} is not there; set TFTRANSFER_SHARED to the shared folder")
        return 0
    RESULTS.parent.mkdir(exist_ok=True)
    if not args.summarise:
        done = {(r["cell"], r["base"], r["method"], r["seed"]) for r in load_runs()} \
            if args.resume else set()
        for cell in args.cells.split(","):
            for base in args.bases.split(","):
                if base == "lite0-hub" and cell not in HUB_CELLS:
                    continue
                with tempfile.TemporaryDirectory() as root:
                    folder = {**CELLS, **EASY_CELLS}[cell](Path(root) / cell)
                    pass_seconds = None
                    for seed in range(args.seeds):
                        for method in args.methods.split(","):
                            if (cell, base, method, seed) in done:
                                continue
                            if method in RECIPES and base == "lite0-hub":
                                continue  # The recipes run on the .keras copy.
                            if pass_seconds is None:
                                pass_seconds = extraction_pass(load_base(base), folder)
                                keras.backend.clear_session()
                            runner = run_recipe if method in RECIPES else run_tftransfer
                            result = runner(method, base, folder, seed)
                            result = {"cell": cell, "base": base, "method": method,
                                      "seed": seed, "commit": commit(),
                                      "pass_seconds": pass_seconds,
                                      "pass_method": "min-of-3-warm", **result}
                            with RESULTS.open("a") as out:
                                out.write(json.dumps(result) + "\n")
                            print(json.dumps({k: v for k, v in result.items()
                                              if k not in ("head", "top", "wise")}),
                                  flush=True)
                            keras.backend.clear_session()
    report = summarise(load_runs())
    print(report)
    (RESULTS.parent / "quality.md").write_text(
        "`python bench/quality.py` (see its docstring for the cells and methods)\n\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
