"""How many top-phase epochs a TF Hub module needs, where every epoch runs the whole module.

A TF Hub module is one layer: the top phase cannot be cut at a boundary and
cached, so each of its epochs runs the whole network forward (and backward
down to its lowest unfrozen variable). This bench trains the shared
EfficientNet-Lite0 through its TF Hub-format copy, with tftransfer's
defaults except the top phase's epochs (0, that is feature extraction; 5;
10; 20, the default), on two cells with their own test photos:

* `clothing-20`: clothing_small, 20 training photos per class (10 classes),
  its 372 test photos;
* `oxford17-20`: oxford17 flowers, 20 training photos per class (17
  classes), 20 test photos per class.

    python bench/hub_top_epochs.py [--cells clothing-20,oxford17-20] [--seeds 2]

Writes `bench/results/hub_top_epochs.jsonl` (one line per run) and prints a
table: mean test accuracy and median wall time per cell and epoch count.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import keras

import tftransfer
from top_phase import SHARED, clothing, flowers

HUB = SHARED / "weights" / "efficientnet_lite0_imagenet_hub"
RESULTS = Path(__file__).resolve().parent / "results" / "hub_top_epochs.jsonl"
CELLS = {"clothing-20": lambda root: clothing(root, per_class=20),
         "oxford17-20": lambda root: flowers(root, 20)}
EPOCHS = (0, 5, 10, 20)


def run(cell, folder, seed, epochs):
    keras.utils.set_random_seed(seed)
    base = tftransfer.load_base(str(HUB), input_size=224)
    data = tftransfer.load_data(str(folder), base.input_size, seed=seed)
    model = tftransfer.build_classifier(base, len(data.class_names))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        history = tftransfer.fine_tune(
            model, data.train, data.validation, top=tftransfer.Phase.top(epochs=epochs),
            verbose=0, options=tftransfer.RunOptions(feature_cache=cache, seed=seed))
    seconds = time.perf_counter() - start
    return {"cell": cell, "seed": seed, "top_epochs": epochs,
            "test_accuracy": model.evaluate(data.test, verbose=0,
                                            return_dict=True)["accuracy"],
            "seconds": seconds, "unfrozen": history.unfrozen,
            "kept_phase": history.kept_phase, "top_cached": history.plan.top.cached}


def table(runs):
    lines = ["| cell | top epochs | test accuracy (mean; runs) | seconds (median) |",
             "|---|---|---|---|"]
    for cell in dict.fromkeys(r["cell"] for r in runs):
        for epochs in EPOCHS:
            mine = [r for r in runs if r["cell"] == cell and r["top_epochs"] == epochs]
            if mine:
                accuracies = [100 * r["test_accuracy"] for r in mine]
                lines.append(f"| {cell} | {epochs} | {statistics.mean(accuracies):.1f} "
                             f"({', '.join(f'{a:.1f}' for a in accuracies)}) | "
                             f"{statistics.median(r['seconds'] for r in mine):.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    if not HUB.is_dir():
        raise SystemExit(f"needs {HUB}")
    RESULTS.parent.mkdir(exist_ok=True)
    runs = []
    for cell in args.cells.split(","):
        with tempfile.TemporaryDirectory() as root:
            folder = CELLS[cell](Path(root))
            for seed in range(args.seeds):
                for epochs in EPOCHS:  # Interleaved, against the machine's drift.
                    runs.append(run(cell, folder, seed, epochs))
                    print(json.dumps(runs[-1]), flush=True)
                    with RESULTS.open("a") as out:
                        out.write(json.dumps(runs[-1]) + "\n")
                    keras.backend.clear_session()
    print(table(runs))


if __name__ == "__main__":
    main()
