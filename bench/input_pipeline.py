"""Benchmark: the input pipeline against `keras.utils.image_dataset_from_directory`.

Both produce the same output, float32 batches of RGB images at 224x224 with
int labels, from the same folder, in the same run. The measure is images
per second over whole epochs (decode, resize, batch, prefetch):

* epoch 1, from nothing: for `image_dataset_from_directory`, listing the
  folder and the first epoch; for `tftransfer.image_folder`, listing, the
  data check and the first epoch. The check decodes every file once, at
  the target size, and keeps the pixels, so the first epoch reads them;
* epoch 1 with a warm image cache (`cache=FOLDER`, as a second training
  run over the same files finds it);
* later epochs (their mean).

Timings on a shared 2-core VM vary up to 2x from one minute to the next, so
the three pipelines run in turn for several rounds, and the report gives
the median of each figure and the median of the per-round ratios, with the
CPU time per image (less sensitive to the machine's load). It also times
decoding and resizing alone, each file once, in full (as Keras does) and
at the DCT scale tftransfer picks: their ratio bounds epoch 1's speed-up
for any pipeline that checks (so decodes) every file before training.

Goals: at least 1.5x on epoch 1 and at least 3x on later epochs.

Uses `../shared/datasets/oxford17_flowers` when present, else a generated
folder of JPEGs.

    python bench/input_pipeline.py [--rounds 3] [--epochs 3] [--data DIR]
"""

import argparse
import functools
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

import tftransfer  # noqa: E402

FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "oxford17_flowers"


def generated_folder(root, classes=5, per_class=200, size=(640, 480)):
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            # Smooth images, like photos, so that JPEG sizes are realistic.
            small = rng.integers(0, 255, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
            Image.fromarray(small).resize(size, Image.BILINEAR).save(
                folder / f"{i:04d}.jpg", quality=90)
    return root


def warm_page_cache(folder):
    """Reads every file once, so that neither pipeline pays for the disk."""
    for path in Path(folder).rglob("*"):
        if path.is_file():
            path.read_bytes()


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_epochs(make_dataset, epochs):
    """`(count, [(images/s, CPU ms/image)] per epoch)`; epoch 1 includes `make_dataset`."""
    results, count = [], 0
    wall, cpu = time.perf_counter(), cpu_seconds()
    dataset = make_dataset()
    for _ in range(epochs):
        count = 0
        for images, _ in dataset:
            count += int(images.shape[0])
        now_wall, now_cpu = time.perf_counter(), cpu_seconds()
        results.append((count / (now_wall - wall), 1e3 * (now_cpu - cpu) / count))
        wall, cpu = now_wall, now_cpu
    return count, results


def decode_floor(folder, size):
    """`{name: (images/s, CPU ms/image)}` of decoding alone, each file once.

    "keras" decodes in full and resizes, as `image_dataset_from_directory`
    does; "scaled" decodes each JPEG at the DCT scale that
    `tftransfer.data.jpeg_ratio` picks, resizes and rounds to uint8, as the
    data check does (minus reading headers and keeping the pixels). No
    pipeline that decodes every image once before training, as a data check
    must, can run epoch 1 faster than "scaled", so the ratio of the two
    bounds its speed-up.
    """
    paths = sorted(str(p) for p in Path(folder).rglob("*.jpg"))
    by_ratio = {}
    for path in paths:
        width, height = Image.open(path).size
        by_ratio.setdefault(tftransfer.data.jpeg_ratio(height, width, size), []).append(path)

    def keras_decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return tf.image.resize(image, size), 0

    def scaled_decoder(ratio):
        def decode(path):
            # The check's own decoder, so that the floor follows it.
            return tftransfer.data.decode.decode_jpeg(tf.io.read_file(path), size, ratio), 0
        return decode

    def files(names):
        return tf.data.Dataset.from_tensor_slices(names)

    scaled = [files(names).map(scaled_decoder(ratio), num_parallel_calls=tf.data.AUTOTUNE)
              for ratio, names in by_ratio.items()]
    datasets = {
        "keras": files(paths).map(keras_decode, num_parallel_calls=tf.data.AUTOTUNE),
        "scaled": functools.reduce(tf.data.Dataset.concatenate, scaled),
    }
    rates = {name: [] for name in datasets}
    for _ in range(5):  # In turn, as the pipelines above, for the same reason.
        for name, ds in datasets.items():
            rates[name] += timed_epochs(lambda: ds.batch(64), 1)[1]
    return {name: tuple(np.median(runs, axis=0)) for name, runs in rates.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a folder of class subfolders")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.data or (FLOWERS if FLOWERS.is_dir()
                               else generated_folder(Path(scratch) / "generated"))
        size = (args.image_size, args.image_size)
        print(f"data: {folder}", flush=True)
        warm_page_cache(folder)
        image_cache = Path(scratch) / "image_cache"

        def theirs():
            return keras.utils.image_dataset_from_directory(
                folder, image_size=size, batch_size=args.batch_size, verbose=False
            ).prefetch(tf.data.AUTOTUNE)

        def ours(cache=True):
            return tftransfer.image_folder(folder, size, batch_size=args.batch_size,
                                           validation_split=0, image_cache=cache).train

        rows = {"keras": [], "ours": [], "warm": []}
        for round_number in range(args.rounds):
            shutil.rmtree(image_cache, ignore_errors=True)
            ours(image_cache)  # Writes the folder cache that "warm" reads.
            for name, make in (("keras", theirs), ("ours", ours),
                               ("warm", lambda: ours(image_cache))):
                count, epochs = timed_epochs(make, args.epochs)
                rows[name].append(epochs)
            print(f"round {round_number + 1}: " + ", ".join(
                f"{name} {epochs[-1][0][0]:.0f}/{np.mean([e[0] for e in epochs[-1][1:]]):.0f}"
                for name, epochs in rows.items()) + " img/s (epoch 1/later)", flush=True)
        floor = decode_floor(folder, size)

    def figures(name):
        runs = np.array(rows[name])  # (rounds, epochs, [rate, cpu])
        return (np.median(runs[:, 0, 0]), np.median(runs[:, 0, 1]),
                np.median(runs[:, 1:, 0].mean(axis=1)), np.median(runs[:, 1:, 1].mean(axis=1)))

    def speedup(name, epoch):
        ours_runs, their_runs = np.array(rows[name]), np.array(rows["keras"])
        if epoch == 0:
            return np.median(ours_runs[:, 0, 0] / their_runs[:, 0, 0])
        return np.median(ours_runs[:, 1:, 0].mean(axis=1) / their_runs[:, 1:, 0].mean(axis=1))

    print(f"\n{count} images at {size[0]}x{size[1]}, batch {args.batch_size}, "
          f"{os.cpu_count()} CPU cores, {args.rounds} rounds (medians); images per "
          "second (CPU ms per image):")
    print(f"  {'':44s} {'epoch 1':>16s} {'later epochs':>16s}")
    labels = {"keras": "image_dataset_from_directory",
              "ours": "tftransfer.image_folder (check + epoch 1)",
              "warm": "tftransfer.image_folder, warm image_cache=FOLDER"}
    for name, label in labels.items():
        first, first_cpu, later, later_cpu = figures(name)
        ratios = "" if name == "keras" else (
            f"   {speedup(name, 0):.1f}x / {speedup(name, 1):.1f}x")
        print(f"  {label:44s} {first:7.0f} ({first_cpu:4.2f}) {later:7.0f} "
              f"({later_cpu:4.2f}){ratios}")
    print("decoding and resizing alone, each file once (no check, cache or batching):")
    for name, label in (("keras", "full decode, as image_dataset_from_directory"),
                        ("scaled", "at the DCT scale of jpeg_ratio, as the check")):
        print(f"  {label:44s} {floor[name][0]:7.0f} ({floor[name][1]:4.2f})")
    print(f"  so epoch 1 from nothing can be at most {floor['keras'][1] / floor['scaled'][1]:.2f}x "
          "faster (the ratio of CPU time) for any pipeline that checks every file")
    print(f"speed-up (median of per-round ratios): epoch 1 {speedup('ours', 0):.1f}x "
          f"(goal 1.5x), {speedup('warm', 0):.1f}x with a warm image cache; later "
          f"epochs {speedup('ours', 1):.1f}x (goal 3x)")
    keras_cpu = figures("keras")[1::2]
    by_cpu = {name: [k / o for k, o in zip(keras_cpu, figures(name)[1::2])]
              for name in ("ours", "warm")}
    print(f"by CPU time per image: epoch 1 {by_cpu['ours'][0]:.1f}x, "
          f"{by_cpu['warm'][0]:.1f}x with a warm image cache; later epochs "
          f"{by_cpu['ours'][1]:.1f}x")


if __name__ == "__main__":
    main()
