"""Benchmark: the input pipeline against `keras.utils.image_dataset_from_directory`.

Both produce the same output, float32 batches of RGB images at 224x224 with
int labels, from the same folder, in the same run. The measure is images
per second over whole epochs (decode, resize, batch, prefetch), epoch 1 and
the mean of later epochs. Ours decodes JPEGs at a reduced DCT scale when
they are at least twice the target size, and caches the resized uint8
images, so later epochs skip decoding; `image_dataset_from_directory` has no
cache. Our epoch 1 is shown with and without the data check that runs
before training (every file decoded once to find unusable ones).

Goals: at least 1.5x on epoch 1 and at least 3x on later epochs.

Uses `../shared/datasets/oxford17_flowers` when present, else a generated
folder of JPEGs.

    python bench/input_pipeline.py [--epochs 3] [--data DIR]
"""

import argparse
import os
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


def decode_rate(folder, ratio):
    """JPEGs per second decoded (nothing else) at a DCT scale, in parallel."""
    paths = sorted(str(p) for p in Path(folder).rglob("*.jpg"))
    ds = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda p: tf.shape(tf.io.decode_jpeg(tf.io.read_file(p), channels=3, ratio=ratio)),
        num_parallel_calls=tf.data.AUTOTUNE)
    for _ in ds.take(8):
        pass
    start = time.perf_counter()
    count = sum(1 for _ in ds)
    return count / (time.perf_counter() - start)


def epoch_rates(dataset, epochs):
    rates = []
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for images, _ in dataset:
            count += int(images.shape[0])
        rates.append(count / (time.perf_counter() - start))
    return count, rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a folder of class subfolders")
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

        start = time.perf_counter()
        ours = tftransfer.image_folder(folder, size, batch_size=args.batch_size,
                                       validation_split=0).train
        check_seconds = time.perf_counter() - start
        count, ours_rates = epoch_rates(ours, args.epochs)

        theirs = keras.utils.image_dataset_from_directory(
            folder, image_size=size, batch_size=args.batch_size, verbose=False
        ).prefetch(tf.data.AUTOTUNE)
        _, their_rates = epoch_rates(theirs, args.epochs)

        decode = {ratio: decode_rate(folder, ratio) for ratio in (1, 2, 8)}
    ours_first_with_check = count / (count / ours_rates[0] + check_seconds)
    later = slice(1, None)
    print(f"{count} images at {size[0]}x{size[1]}, batch {args.batch_size}, "
          f"{os.cpu_count()} CPU cores; images per second:")
    print(f"  {'':34s} {'epoch 1':>9s} {'later (mean)':>13s}")
    print(f"  {'image_dataset_from_directory':34s} {their_rates[0]:9.0f} "
          f"{np.mean(their_rates[later]):13.0f}")
    print(f"  {'tftransfer.image_folder':34s} {ours_rates[0]:9.0f} "
          f"{np.mean(ours_rates[later]):13.0f}")
    print(f"  {'tftransfer, epoch 1 + data check':34s} {ours_first_with_check:9.0f}")
    print(f"JPEG decoding alone, images per second: full scale {decode[1]:.0f}, "
          f"1/2 scale {decode[2]:.0f}, 1/8 scale {decode[8]:.0f} (the least work libjpeg "
          f"can do: a ceiling of {decode[8] / decode[1]:.1f}x on an epoch 1 bound by "
          f"decoding)")
    print(f"speed-up: epoch 1 {ours_rates[0] / their_rates[0]:.1f}x "
          f"({ours_first_with_check / their_rates[0]:.1f}x with the check; goal 1.5x), "
          f"later epochs {np.mean(ours_rates[later]) / np.mean(their_rates[later]):.1f}x "
          f"(goal 3x)")


if __name__ == "__main__":
    main()
