"""Benchmark: `tftransfer predict` over a folder, memory and time against its size.

Writes folders of small PNG photos stand-ins (64x64 noise), exports the
bundled base with a fresh head as a SavedModel, and runs
`tftransfer predict --model EXPORT FOLDER --predictions predictions.csv` in a
child process for each folder size. Prints each run's peak resident memory
(the child's `ru_maxrss`) and wall time. `predict` reads the images in
batches of 64, so memory should not grow with the number of images.

    python bench/predict_memory.py [--sizes 1000,10000]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def write_images(folder, count, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")


def export_demo(path):
    import tftransfer

    base = tftransfer.load_base("fashion_mobilenet_v2")
    model = tftransfer.build_classifier(base, 5)
    return tftransfer.export_saved_model(model, path, [str(i) for i in range(5)])


def peak_of_child(command):
    """Runs `command`; returns `(its peak RSS in MB, seconds, exit status)`."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)  # This child's own resource use.
    child.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - start, child.returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        export = export_demo(scratch / "export")
        for size in sizes:
            folder = scratch / f"images_{size}"
            write_images(folder, size)
            peak, seconds, status = peak_of_child(
                [sys.executable, "-m", "tftransfer.cli", "predict", "--model", str(export),
                 str(folder), "--predictions", str(scratch / f"p_{size}.csv")])
            rows = len((scratch / f"p_{size}.csv").read_text().splitlines()) - 1
            print(f"{size:6d} images: peak RSS {peak:6.0f} MB, {seconds:6.1f} s, "
                  f"{rows} rows, exit {status}", flush=True)


if __name__ == "__main__":
    main()
