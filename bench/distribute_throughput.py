"""Fine-tuning throughput of EfficientNetB0: float32 vs mixed precision, with and without XLA.

    python bench/distribute_throughput.py                  # on a GPU: 224x224, batch 64
    python bench/distribute_throughput.py --image-size 64 --steps 5   # a CPU smoke run

Each configuration runs in its own process (the dtype policy is global),
builds the classifier under `select_strategy("auto")` with `weights=None`
(no download; speed does not depend on the weights), unfreezes the whole
base, and times `model.fit` on in-memory batches after a warm-up epoch.
Prints a Markdown table of images per second.
"""

import argparse
import json
import subprocess
import sys
import time

CONFIGS = [("float32", False), ("float32", True), ("mixed", False), ("mixed", True)]


def measure(precision, jit, image_size, batch_size, steps):
    import numpy as np
    import tensorflow as tf

    import tftransfer
    from tftransfer.training import distribute

    strategy = distribute.select_strategy("auto")
    policy = distribute.select_precision(
        "auto" if precision == "mixed" else "float32", strategy)
    global_batch = distribute.global_batch_size(batch_size, strategy)
    with strategy.scope():
        base = tftransfer.load_base("efficientnet_b0", weights=None,
                                    input_size=image_size)
        model = tftransfer.build_classifier(base, 10, unfreeze="all")
        from tftransfer.models.losses import SparseCategoricalCrossentropy

        model.compile(optimizer="adam", loss=SparseCategoricalCrossentropy(),
                      jit_compile=jit)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (global_batch, image_size, image_size, 3)).astype("float32")
    labels = rng.integers(0, 10, global_batch).astype("int32")
    data = tf.data.Dataset.from_tensors((images, labels)).repeat(steps).cache()
    model.fit(data, epochs=1, verbose=0)  # Warm-up: tracing and compilation.
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    device = (tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
              .get("device_name", "GPU") if tf.config.list_physical_devices("GPU") else "CPU")
    return {"precision": policy, "jit": jit, "images_per_s": steps * global_batch / seconds,
            "device": device, "replicas": strategy.num_replicas_in_sync}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64, help="per replica")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        precision, jit = args.one.split(",")
        print(json.dumps(measure(precision, jit == "xla", args.image_size,
                                 args.batch_size, args.steps)))
        return
    rows = []
    for precision, jit in CONFIGS:
        result = subprocess.run(
            [sys.executable, __file__, "--one", f"{precision},{'xla' if jit else 'no'}",
             "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
             "--steps", str(args.steps)], capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stderr[-2000:], file=sys.stderr)
            continue
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    if not rows:
        sys.exit("no configuration ran")
    baseline = rows[0]["images_per_s"]
    print(f"EfficientNetB0 fine-tuning (all layers), {args.image_size}x{args.image_size}, "
          f"batch {args.batch_size} per replica, {rows[0]['replicas']} replica(s) on "
          f"{rows[0]['device']}\n")
    print("| precision | XLA | images/s | vs float32 |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['precision']} | {'on' if row['jit'] else 'off'} | "
              f"{row['images_per_s']:,.0f} | {row['images_per_s'] / baseline:.2f}x |")


if __name__ == "__main__":
    main()
