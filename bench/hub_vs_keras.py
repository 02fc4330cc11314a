"""The same base through the TF Hub path and the Keras path, on the bundled demo.

The bundled base ships twice: as Keras weights (`fashion_mobilenet_v2`) and
as a hub-format SavedModel (`saved_models/fashion_mobilenet_v2_hub`, loaded
by `HubModule`). Both are trained with the same `fine_tune` call on the demo
target, for several seeds, and scored on its 500 test images:

* frozen: phase 1 only (feature extraction, cached features);
* fine-tuned: both phases with the whole backbone unfrozen (a hub module is
  one layer, so `unfreeze="all"` is the setting both paths share).

Each run starts with an empty feature cache, so extraction is timed too,
and with freshly loaded data in a fixed order, so that the two paths of one
seed see the same head initialization and the same epochs.
Goal (issue 3): the same accuracy within 1 point and the same time within 10%.

Usage:
    python bench/hub_vs_keras.py [--seeds 3]
"""

import argparse
import dataclasses
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

import tftransfer
from tftransfer.cli import DEMO_DATA
from tftransfer.models.bases import BUNDLED_BASE, SAVED_MODELS_DIR

PATHS = {"keras": BUNDLED_BASE, "hub": str(SAVED_MODELS_DIR / "fashion_mobilenet_v2_hub")}
SETTINGS = {"frozen": dict(top=tftransfer.Phase.top(epochs=0)),
            "fine-tuned": dict(top=tftransfer.Phase.top(epochs=20,
                                                                    unfreeze="all"))}


def load_demo():
    """The demo data, loaded afresh: a shuffled dataset's order depends on how
    often it has been iterated, so each run gets its own."""
    data = tftransfer.load_data(str(DEMO_DATA), (48, 48), batch_size=16)
    # A fixed decoding order, so that a seed gives both paths the same epochs.
    options = tf.data.Options()
    options.deterministic = True
    return dataclasses.replace(data, train=data.train.with_options(options))


def run(spec, seed, settings):
    data = load_demo()
    base = tftransfer.load_base(spec)
    # Seeded after loading (building a Keras base draws random numbers, a
    # hub module does not), so both paths start from the same head.
    keras.utils.set_random_seed(seed)
    model = tftransfer.build_classifier(base, len(data.class_names))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        tftransfer.fine_tune(model, data.train, data.validation, verbose=0,
                             options=tftransfer.RunOptions(feature_cache=cache, seed=seed),
                             **settings)
    seconds = time.perf_counter() - start
    return model.evaluate(data.test, verbose=0, return_dict=True)["accuracy"], seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    for path, spec in PATHS.items():  # Warm up both, so neither pays first-use costs.
        run(spec, 0, dict(head=tftransfer.Phase.head(epochs=1),
                          top=tftransfer.Phase.top(epochs=1, unfreeze="all")))
    print("| setting | path | test accuracy (mean of seeds) | seconds (median) |\n"
          "|---|---|---|---|")
    summary = {}
    for setting, settings in SETTINGS.items():
        for path, spec in PATHS.items():
            results = [run(spec, seed, settings) for seed in range(args.seeds)]
            accuracy = statistics.mean(r[0] for r in results)
            seconds = statistics.median(r[1] for r in results)
            summary[setting, path] = accuracy, seconds
            print(f"| {setting} | {path} | {accuracy:.3f} "
                  f"({', '.join(f'{r[0]:.3f}' for r in results)}) | {seconds:.1f} |",
                  flush=True)
    print()
    for setting in SETTINGS:
        (keras_acc, keras_s), (hub_acc, hub_s) = summary[setting, "keras"], summary[setting, "hub"]
        gap = abs(hub_acc - keras_acc) * 100
        ratio = hub_s / keras_s
        verdict = ("met" if 0.9 <= ratio <= 1.1 else
                   "hub faster" if ratio < 0.9 else "NOT met: hub slower")
        print(f"{setting}: accuracy gap {gap:.1f} points (goal <= 1: "
              f"{'met' if gap <= 1 else 'NOT met'}), time hub/keras {ratio:.2f} "
              f"(goal 0.90-1.10: {verdict})")


if __name__ == "__main__":
    main()
