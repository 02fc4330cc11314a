"""How phase 2 behaves epoch by epoch on real photos, and which weights to keep.

Trains the shared MobileNetV2-160 on an oxford17 split (60 training photos
per class by default, a fifth of them held out for validation) with
tftransfer's defaults, or with phase-2 settings given on the command line,
and scores the test photos after every epoch of both phases (on the cached
activations, so it costs little). For each run it prints phase 1's test
accuracy, phase 2's test accuracy epoch by epoch, and what was kept; the
JSON lines it writes hold every epoch's validation loss and accuracy too,
to judge a rule for stopping or for choosing between the phases.

This is what the phase-2 defaults (`phases.TOP`: no early stopping,
1e-4 over 20 epochs, and the choice between the phases on validation accuracy)
were chosen with.

Usage:
    python bench/phase_two.py                          # the defaults, seeds 0-2
    python bench/phase_two.py --phase learning_rate=1e-4,patience=5 --seeds 0,1
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tftransfer  # noqa: E402
from tftransfer.training import plan as plan_module  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_oxford17 import FLOWERS, SIZE, WEIGHTS, split_folder  # noqa: E402


class TestEveryEpoch(keras.callbacks.Callback):
    """Scores the test images after each epoch, on the part that trains.

    Phase 1 trains the head on features and phase 2 the top on boundary
    activations, so the test images are run through the frozen bottom once
    (and the top once more for phase 1's features) and reused.
    """

    def __init__(self, images, labels, splits):
        super().__init__()
        self.images, self.labels, self.splits = images, labels, splits
        self.activations = self.features = None
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        split = self.splits[-1]
        if self.activations is None:
            self.activations = split.bottom.predict(self.images, verbose=0, batch_size=64)
            self.features = split.top_features.predict(self.activations, verbose=0,
                                                       batch_size=64)
        phase = "top" if self.model is split.trainer else "head"
        inputs = self.activations if phase == "top" else self.features
        predicted = self.model.predict(inputs, verbose=0, batch_size=64).argmax(-1)
        self.epochs.append({"phase": phase, "epoch": epoch, **(logs or {}),
                            "test_accuracy": float((predicted == self.labels).mean())})


def parse_phase(text):
    """`"learning_rate=1e-4,patience=none"` -> a `Phase.top` with those changes."""
    changes = {}
    for item in filter(None, (text or "").split(",")):
        key, value = item.split("=")
        if value.lower() == "none":
            changes[key] = None
        elif key in ("epochs", "patience", "warmup_epochs") or (key == "unfreeze"
                                                                and value.isdigit()):
            changes[key] = int(value)
        elif key == "learning_rate":
            changes[key] = float(value)
        else:
            changes[key] = value
    return tftransfer.Phase.top(**changes)


def run(folder, phase, seed, cache):
    keras.utils.set_random_seed(seed)
    base = tftransfer.load_base("mobilenet_v2", weights=str(WEIGHTS), input_size=SIZE)
    data = tftransfer.load_data(str(folder), base.input_size, seed=seed)
    images = np.concatenate([x.numpy() for x, _ in data.test])
    labels = np.concatenate([y.numpy() for _, y in data.test])
    model = tftransfer.build_classifier(base, len(data.class_names))
    splits = []
    original = plan_module.boundary_split

    def recording(*args, **kwargs):
        split, why_not = original(*args, **kwargs)
        splits.append(split)
        return split, why_not

    probe = TestEveryEpoch(images, labels, splits)
    plan_module.boundary_split = recording
    try:
        history = tftransfer.fine_tune(model, data.train, data.validation, top=phase,
                                       verbose=0, callbacks=[probe],
                                       options=tftransfer.RunOptions(feature_cache=cache,
                                                                     seed=seed))
    finally:
        plan_module.boundary_split = original
    if not splits or splits[-1] is None:
        raise SystemExit("phase 2 did not run on cached activations; nothing to probe")
    return {"seed": seed, "phase": repr(phase), "kept_phase": history.kept_phase,
            "unfrozen": history.unfrozen,
            "test_accuracy": model.evaluate(data.test, verbose=0,
                                            return_dict=True)["accuracy"],
            "epochs": probe.epochs}


def describe(result):
    head = [e for e in result["epochs"] if e["phase"] == "head"]
    tune = [e for e in result["epochs"] if e["phase"] == "fine_tune"]
    best_head = min(head, key=lambda e: e["val_loss"])
    return (f"seed {result['seed']}: kept {result['kept_phase']} -> "
            f"{100 * result['test_accuracy']:.1f}%; phase 1 {100 * best_head['test_accuracy']:.1f}% "
            f"(val acc {best_head['val_accuracy']:.3f}); phase 2 by epoch "
            + " ".join(f"{100 * e['test_accuracy']:.0f}" for e in tune)
            + (f" (last val acc {tune[-1]['val_accuracy']:.3f})" if tune else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=60, help="training photos per class")
    parser.add_argument("--phase", help="phase-2 changes, e.g. learning_rate=1e-4,patience=5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--output", default=str(Path(__file__).resolve().parent / "results"
                                                / "phase_two.jsonl"))
    args = parser.parse_args()
    if not FLOWERS.is_dir() or not WEIGHTS.is_file():
        print(f"skipped: {FLOWERS} or {WEIGHTS} is missing (see ../shared/README.md)")
        return
    phase = parse_phase(args.phase)
    print(f"phase 2: {phase}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = split_folder(Path(tmp) / "split", args.size)
        for seed in (int(s) for s in args.seeds.split(",")):
            start = time.perf_counter()
            result = run(folder, phase, seed, Path(tmp) / "cache")
            result["seconds"] = time.perf_counter() - start
            results.append(result)
            print(describe(result), f"[{result['seconds']:.0f} s]", flush=True)
            with open(args.output, "a") as f:
                f.write(json.dumps(result) + "\n")
    accuracies = [r["test_accuracy"] for r in results]
    spread = f" ± {100 * statistics.stdev(accuracies):.1f}" if len(results) > 1 else ""
    print(f"mean test accuracy {100 * statistics.mean(accuracies):.1f}%{spread}")


if __name__ == "__main__":
    main()
