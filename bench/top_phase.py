"""When does the top phase pay? The head phase's evidence against the test set.

For each cell (a dataset cut, a base), with the same seed and split, trains
tftransfer's defaults twice: the head phase alone (`features`) and both
phases (`defaults`, with `unfreeze="auto"`), and records what the head phase
saw on validation (its accuracy p at the kept epoch, the validation size n)
beside both test accuracies. It is the evidence for a rule that decides,
from the user's own data, whether the top phase is worth running.

Cells (MobileNetV2-160 from ../shared unless named):

* `oxford17-60`: oxford17 flowers, 60 training photos per class (17 classes);
* `clothing-20`: clothing_small, 20 training photos per class (10 classes);
* `clothing-all`: clothing_small as published (112 to 795 per class);
* `dress-skirt`: two clothing classes, all their training photos
  (241 and 112), tested on their test photos;
* `*-lite0`: the same on EfficientNet-Lite0 (ImageNet), as a `.keras` file.

    python bench/top_phase.py [--cells oxford17-60,dress-skirt] [--seeds 2]

Writes `bench/results/top_phase.jsonl` (one line per run, appended).
"""

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tftransfer  # noqa: E402
from tftransfer.training.phases import kept_epoch_logs  # noqa: E402

ROOT = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("TFTRANSFER_SHARED", ROOT.parent.parent / "shared"))
FLOWERS = SHARED / "datasets" / "oxford17_flowers"
CLOTHING = SHARED / "datasets" / "clothing_small"
MOBILENET = SHARED / "weights" / "mobilenet_v2_160_stanford_dogs.weights.h5"
LITE0 = SHARED / "weights" / "efficientnet_lite0_imagenet.keras"
RESULTS = ROOT / "results" / "top_phase.jsonl"


def link(files, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        (folder / file.name).symlink_to(file)


def flowers(root, per_class, seed=0):
    """oxford17: 20 test photos per class, `per_class` training photos (as bench/quality.py)."""
    rng = random.Random(seed)
    for class_dir in sorted(p for p in FLOWERS.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.is_file())
        rng.shuffle(files)
        link(files[:20], root / "test" / class_dir.name)
        link(files[20:20 + per_class], root / "train" / class_dir.name)
    return root


def clothing(root, per_class=None, classes=None, seed=0):
    """clothing_small's train/ (all, or `per_class` of each) and test/; its own
    validation/ is left out, so that every cell splits a fifth of train/ off alike."""
    rng = random.Random(seed)
    for class_dir in sorted((CLOTHING / "train").iterdir()):
        if classes and class_dir.name not in classes:
            continue
        files = sorted(class_dir.iterdir())
        rng.shuffle(files)
        link(files[:per_class] if per_class else files, root / "train" / class_dir.name)
        link(sorted((CLOTHING / "test" / class_dir.name).iterdir()),
             root / "test" / class_dir.name)
    return root


CELLS = {
    "oxford17-60": lambda root: flowers(root, 60),
    "clothing-20": lambda root: clothing(root, per_class=20),
    "clothing-all": lambda root: clothing(root),
    "dress-skirt": lambda root: clothing(root, classes=("dress", "skirt")),
}


def load_base(cell):
    if cell.endswith("-lite0"):
        return tftransfer.load_base(str(LITE0))
    return tftransfer.load_base("mobilenet_v2", weights=str(MOBILENET), input_size=160)


def run(cell, folder, seed, top_runs):
    keras.utils.set_random_seed(seed)
    base = load_base(cell)
    data = tftransfer.load_data(str(folder), base.input_size, seed=seed)
    model = tftransfer.build_classifier(base, len(data.class_names))
    top = tftransfer.Phase.top() if top_runs else tftransfer.Phase.top(epochs=0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        history = tftransfer.fine_tune(model, data.train, data.validation, top=top,
                                       verbose=0,
                                       options=tftransfer.RunOptions(feature_cache=cache,
                                                                     seed=seed))
    seconds = time.perf_counter() - start
    head = kept_epoch_logs(history.head, history.plan.head.phase, "val_loss")
    last = kept_epoch_logs(history.top, history.plan.top.phase, "val_loss") \
        if history.top else {}
    return {"cell": cell, "seed": seed, "method": "defaults" if top_runs else "features",
            "test_accuracy": model.evaluate(data.test, verbose=0,
                                            return_dict=True)["accuracy"],
            "seconds": seconds, "head_val_accuracy": head.get("val_accuracy"),
            "head_val_loss": head.get("val_loss"),
            "top_val_accuracy": last.get("val_accuracy"), "top_val_loss": last.get("val_loss"),
            "top_train_loss": last.get("loss"), "validation_rows": history.plan.validation.rows,
            "train_counts": history.plan.train.counts, "unfrozen": history.unfrozen,
            "kept_phase": history.kept_phase}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="dress-skirt,oxford17-60,clothing-20,clothing-all")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    RESULTS.parent.mkdir(exist_ok=True)
    for cell in args.cells.split(","):
        with tempfile.TemporaryDirectory() as root:
            folder = CELLS[cell.removesuffix("-lite0")](Path(root))
            for seed in range(args.seeds):
                for top_runs in (False, True):
                    result = run(cell, folder, seed, top_runs)
                    print(json.dumps(result), flush=True)
                    with RESULTS.open("a") as out:
                        out.write(json.dumps(result) + "\n")
                    keras.backend.clear_session()


if __name__ == "__main__":
    main()
