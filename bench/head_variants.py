"""The head's choices over every cell of bench/quality.py: taps and regularisation.

For each cell of `bench/quality.py` (its fixed split and test set), each
base and seed, the features model runs once over the training, validation
and test images (unaugmented), and heads are then trained on those
features as the head phase trains them (Adam 1e-3, batch 32, up to 50
epochs, early stopping on the validation loss with patience 5 and the best
weights restored, balanced class weights), one per variant:

* `default`: dropout 0.2, no weight decay, no label smoothing (the head
  `build_classifier` makes);
* `smoothing`: label smoothing 0.1 (Model Maker's default);
* `l2_1e-4`, `l2_1e-3`: an L2 penalty on the Dense kernel;
* `no_taps` (bases with taps only): the last layer's pooled features alone,
  without the inner layers' (`load_base(taps=...)`).

And the evidence for the taps: the out-of-fold accuracy and log-loss of the
linear probe (`training.evidence`) on the training and validation images
pooled, with and without the taps' columns, so that a rule that keeps the
taps only where the probe favours them can be scored against both fixed
choices.

No refit and no augmented views: the variants are compared with each other
on the same features, not with `fine_tune`'s full defaults.

Usage:
    python bench/head_variants.py [--cells ...] [--bases mobilenet_v2,lite0] [--seeds 2]
    python bench/head_variants.py --summarise

Appends to `bench/results/head_variants.jsonl` and writes
`bench/results/head_variants.md`.
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
from tftransfer.models.losses import SparseCategoricalCrossentropy  # noqa: E402
from tftransfer.training.auto import weights_for_counts  # noqa: E402
from tftransfer.training.evidence import measure_evidence  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402

RESULTS = quality.ROOT / "results" / "head_variants.jsonl"
VARIANTS = {
    "default": dict(dropout=0.2, l2=0.0, smoothing=0.0),
    "smoothing": dict(dropout=0.2, l2=0.0, smoothing=0.1),
    "l2_1e-4": dict(dropout=0.2, l2=1e-4, smoothing=0.0),
    "l2_1e-3": dict(dropout=0.2, l2=1e-3, smoothing=0.0),
}


def plain_width(base_name):
    """How many leading feature columns are the last layer's (the taps follow them)."""
    if base_name != "mobilenet_v2":
        return None
    return tftransfer.load_base("mobilenet_v2", weights=None, input_size=160,
                                taps=()).feature_dim


def train_head(train, validation, num_classes, seed, dropout, l2, smoothing):
    keras.utils.set_random_seed(seed)
    x, y = train
    head = keras.Sequential([
        keras.Input((x.shape[1],)), keras.layers.Dropout(dropout),
        keras.layers.Dense(num_classes, activation="softmax",
                           kernel_regularizer=keras.regularizers.L2(l2) if l2 else None)])
    head.compile(keras.optimizers.Adam(1e-3), SparseCategoricalCrossentropy(smoothing),
                 metrics=["accuracy"], steps_per_execution=64)
    head.fit(x, y, batch_size=32, epochs=50, shuffle=True, validation_data=validation,
             class_weight=weights_for_counts(np.bincount(y, minlength=num_classes)),
             callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=5,
                                                      restore_best_weights=True)],
             verbose=0)
    return head


def run_cell(cell, base_name, folder, seed):
    keras.utils.set_random_seed(seed)
    base = quality.load_base(base_name)
    data = tftransfer.load_data(str(folder), base.input_size, seed=seed)
    num_classes = len(data.class_names)
    model = tftransfer.build_classifier(base, num_classes, augmentation=None)
    start = time.perf_counter()
    # quality.predictions gives (labels, outputs): here, of the features model.
    train, validation, test = (quality.predictions(model.get_layer("features"), d)[::-1]
                               for d in (data.train, data.validation, data.test))
    extraction = time.perf_counter() - start
    width = plain_width(base_name)
    variants = dict(VARIANTS)
    if width is not None:
        variants["no_taps"] = dict(VARIANTS["default"], columns=width)
    result = {"cell": cell, "base": base_name, "seed": seed, "commit": quality.commit(),
              "rows": [len(train[1]), len(validation[1]), len(test[1])],
              "extraction_seconds": extraction, "accuracy": {}, "evidence": {}}
    for name, settings in variants.items():
        settings = dict(settings)
        columns = settings.pop("columns", None)
        cut = (lambda split: (split[0][:, :columns], split[1])) if columns else (lambda s: s)
        head = train_head(cut(train), cut(validation), num_classes, seed, **settings)
        probabilities = head.predict(cut(test)[0], verbose=0)
        result["accuracy"][name] = float((probabilities.argmax(1) == test[1]).mean())
    pooled = np.concatenate([train[0], validation[0]]), np.concatenate([train[1], validation[1]])
    for name, columns in (("all", None), ("no_taps", width)):
        if name == "no_taps" and width is None:
            continue
        evidence = measure_evidence(pooled[0][:, :columns] if columns else pooled[0],
                                    pooled[1], num_classes, seed=seed)
        result["evidence"][name] = evidence.to_dict() if evidence else None
    return result


def taps_by_evidence(run, measure):
    """The accuracy of a rule that drops the taps where the probe does better without them.

    `measure`: `"oof_accuracy"` (higher is better) or `"oof_log_loss"` (lower).
    """
    sign = 1 if measure == "oof_accuracy" else -1
    with_taps, without = run["evidence"]["all"], run["evidence"]["no_taps"]
    better_without = sign * without[measure] > sign * with_taps[measure]
    return run["accuracy"]["no_taps" if better_without else "default"], better_without


def summarise(runs):
    cells = {}
    for run in runs:
        cells.setdefault((run["cell"], run["base"]), []).append(run)
    rules = {"taps_by_oof_accuracy": "oof_accuracy", "taps_by_oof_log_loss": "oof_log_loss"}
    names = list(VARIANTS) + ["no_taps", *rules]
    lines = ["| cell | base | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    deltas = {name: [] for name in names}
    for (cell, base), group in sorted(cells.items(), key=lambda kv: (
            list(quality.CELLS).index(kv[0][0]) if kv[0][0] in quality.CELLS else 99, kv[0][1])):
        row = [cell, base]
        default = statistics.mean(r["accuracy"]["default"] for r in group)
        for name in names:
            if name in rules:
                if "no_taps" not in group[0]["accuracy"]:
                    row.append("")
                    continue
                picked = [taps_by_evidence(r, rules[name]) for r in group]
                values = [100 * p[0] for p in picked]
                dropped = sum(p[1] for p in picked)
                value = statistics.mean(values)
                row.append(f"{value:.1f} (taps dropped {dropped}/{len(group)})")
            elif name in group[0]["accuracy"]:
                values = [100 * r["accuracy"][name] for r in group]
                value = statistics.mean(values)
                row.append(f"{value:.1f} [{', '.join(f'{v:.1f}' for v in values)}]")
            else:
                row.append("")
                continue
            deltas[name].append(value - 100 * default)
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for name in names:
        if deltas[name]:
            lines.append(f"- {name} − default: mean {statistics.mean(deltas[name]):+.2f} points, "
                         f"worst {min(deltas[name]):+.1f}, best {max(deltas[name]):+.1f} "
                         f"({len(deltas[name])} cells)")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", default=",".join(quality.CELLS))
    parser.add_argument("--bases", default="mobilenet_v2,lite0")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--summarise", action="store_true")
    args = parser.parse_args()
    if not args.summarise:
        if not quality.SHARED.is_dir():
            print(f"skipped: {quality.SHARED} is not there")
            return 0
        done = {(r["cell"], r["base"], r["seed"]) for r in quality.load_runs(RESULTS)}
        for cell in args.cells.split(","):
            with tempfile.TemporaryDirectory() as root:
                folder = quality.CELLS[cell](Path(root) / cell)
                for base in args.bases.split(","):
                    for seed in range(args.seeds):
                        if (cell, base, seed) in done:
                            continue
                        result = run_cell(cell, base, folder, seed)
                        with RESULTS.open("a") as out:
                            out.write(json.dumps(result) + "\n")
                        print(json.dumps({k: result[k] for k in ("cell", "base", "seed",
                                                                  "accuracy")}), flush=True)
                        keras.backend.clear_session()
    report = summarise(quality.load_runs(RESULTS))
    print(report)
    (RESULTS.parent / "head_variants.md").write_text(
        "`python bench/head_variants.py` (see its docstring)\n\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
