"""Benchmark: both phases with and without their caches.

Phase 1, for each setup:

  (a) one inference pass of the frozen base over the training set;
  (b) the head phase, 10 epochs, with the feature cache (extraction included);
  (c) the same 10 epochs without it, the base running every epoch.

The goals are b/a <= 1.1 (the cache costs little more than one pass) and
c/b >= 6. Setups: the bundled base on the bundled demo data, and
MobileNetV3Small (weights=None: timing only) on 2,000 generated images at
224x224.

Phase 2, on real photos when ../shared is there (oxford17_flowers, 60
training images per class, the shared MobileNetV2 at 160 px, unfreeze=20):

  (d) one epoch of phase 2 without the cache (the whole base runs);
  (e) one epoch of phase 2 on the cached activations at the unfreeze boundary;
  (f) the one-time extraction of those activations.

The goals are e/d <= 0.3 and f/d close to 1. Epochs are timed after a first,
untimed one that traces the step.

    python bench/feature_cache.py [--images 2000] [--epochs 10] [--skip-phase-1]
                                  [--skip-phase-2] [--steps-per-execution N]
                                  [--repeats 3]

(a) and (b) are each the fastest of `--repeats` interleaved runs (see
`measure`). (b) includes everything `fine_tune` does first: reading the
data once for its content's key and class counts (`data.identify`), which
is also printed on its own.
"""

import argparse
import os
from pathlib import Path
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tftransfer  # noqa: E402
from tftransfer.cli import DEMO_DATA  # noqa: E402
from tftransfer.data import identify  # noqa: E402
from tftransfer.models.boundary import split_at  # noqa: E402
from tftransfer.models.losses import SparseCategoricalCrossentropy  # noqa: E402
from tftransfer.training.feature_cache import cached_features  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
FLOWERS = SHARED / "datasets" / "oxford17_flowers"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_160_stanford_dogs.weights.h5"


def generated_images(count, size, batch_size, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, count).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(tf.data.AUTOTUNE)
    return ds, classes


def head_phase(base, train, classes, epochs, cache):
    keras.utils.set_random_seed(0)
    # No augmentation: views would make the cached phase K passes, not one.
    model = tftransfer.build_classifier(base, classes, augmentation=None)
    start = time.perf_counter()
    tftransfer.fine_tune(
        model, train, None, head=tftransfer.Phase.head(epochs=epochs, patience=epochs),
        top=tftransfer.Phase.top(epochs=0), verbose=0,
        options=tftransfer.RunOptions(feature_cache=cache))
    return time.perf_counter() - start


def measure(name, base, train, classes, epochs, repeats):
    """Times (a) and (b) `repeats` times, interleaved, and keeps the fastest of each.

    This machine runs at one of two speeds from minute to minute (the same
    pass took 10 s or 20.5 s), so one timing of each says more about the
    minute than about the code; the fastest of several, as `timeit` does,
    is the cost without interference. Neither includes tracing the base:
    (a) warms `predict` up first, and (b)'s extraction step is traced in
    its first run and reused (that first run is printed too).
    """
    images_only = train.map(lambda x, y: x)
    base.features.predict(images_only.take(1), verbose=0)  # Trace once, untimed.
    a_runs, b_runs, key_runs = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        base.features.predict(images_only, verbose=0)
        a_runs.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as cache:
            b_runs.append(head_phase(base, train, classes, epochs, cache))
        start = time.perf_counter()
        identify(train, classes)
        key_runs.append(time.perf_counter() - start)
    a, b, key = min(a_runs), min(b_runs), min(key_runs)
    c = head_phase(base, train, classes, epochs, False)
    runs = lambda times: ", ".join(f"{t:.1f}" for t in times)  # noqa: E731
    print(f"{name}\n  (a) one inference pass     {a:7.1f} s   (runs: {runs(a_runs)})\n"
          f"  (b) {epochs} head epochs, cached {b:7.1f} s   b/a = {b / a:.2f} "
          f"(goal <= 1.1)   (runs: {runs(b_runs)}; the first traces the base)\n"
          f"      of which the data's key and counts (one read of the data) "
          f"{key:.1f} s   (runs: {runs(key_runs)})\n"
          f"  (c) {epochs} head epochs, uncached {c:5.1f} s   c/b = {c / b:.1f} "
          f"(goal >= 6)", flush=True)


class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def second_epoch(model, data):
    """Seconds of a second epoch of `model.fit` (the first traces the step)."""
    model.compile(keras.optimizers.Adam(1e-5), SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    timer = EpochTimes()
    model.fit(data, epochs=2, verbose=0, callbacks=[timer])
    return timer.seconds


def measure_phase_two(batch_size, unfreeze=20):
    if not (FLOWERS.is_dir() and WEIGHTS.is_file()):
        print(f"phase 2: skipped ({FLOWERS} or {WEIGHTS} is not there)")
        return
    base = tftransfer.load_base("mobilenet_v2", weights=str(WEIGHTS), input_size=160)
    data = tftransfer.image_folder(FLOWERS, base.input_size, batch_size=batch_size,
                                   validation_split=0.25, seed=0)
    model = tftransfer.build_classifier(base, len(data.class_names))
    unfrozen = tftransfer.set_trainable(model, unfreeze)
    d = second_epoch(model, data.train)
    split, why_not = split_at(model, unfrozen)
    assert why_not is None, why_not
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        cached, manifest = cached_features(split.bottom, data.train, cache_dir=cache,
                                           shuffle=True, seed=0)
        f = time.perf_counter() - start
        e = second_epoch(split.trainer, cached)
    shapes = " + ".join("x".join(map(str, shape)) for shape in manifest["shapes"])
    print(f"phase 2: MobileNetV2-160, oxford17 ({manifest['rows']} images), "
          f"unfreeze={unfreeze}, {split.crossing} tensor(s) cross the cut ({shapes})\n"
          f"  (d) one uncached epoch      {d:7.1f} s\n"
          f"  (e) one cached epoch        {e:7.1f} s   e/d = {e / d:.2f} (goal <= 0.3)\n"
          f"  (f) the extraction, once    {f:7.1f} s   f/d = {f / d:.2f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-phase-1", action="store_true")
    parser.add_argument("--skip-phase-2", action="store_true")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of (a) and (b), interleaved; the fastest of each counts")
    parser.add_argument("--steps-per-execution", type=int,
                        help="steps per call of the cached phases (default: "
                             "training.CACHED_STEPS_PER_EXECUTION)")
    args = parser.parse_args()
    if args.steps_per_execution:
        tftransfer.training.fine_tuning.CACHED_STEPS_PER_EXECUTION = dict.fromkeys(
            tftransfer.training.fine_tuning.CACHED_STEPS_PER_EXECUTION, args.steps_per_execution)
    if not args.skip_phase_2:
        measure_phase_two(args.batch_size)
    if args.skip_phase_1:
        return

    base = tftransfer.load_base("fashion_mobilenet_v2")
    data = tftransfer.image_folder(DEMO_DATA / "train", base.input_size,
                                   batch_size=args.batch_size, validation_split=0)
    measure(f"bundled base, demo data ({len(data.class_names) * 20} images at 48x48)",
            base, data.train, len(data.class_names), args.epochs, args.repeats)

    base = tftransfer.load_base("mobilenet_v3_small", weights=None)
    train, classes = generated_images(args.images, 224, args.batch_size)
    measure(f"MobileNetV3Small, {args.images} images at 224x224", base, train, classes,
            args.epochs, args.repeats)


if __name__ == "__main__":
    main()
