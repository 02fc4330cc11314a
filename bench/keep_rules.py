"""Scores rules for the top phase, offline, on `bench/quality.py --methods probe` runs.

Each probe run recorded the evidence measure, the test accuracy of the
head phase's weights, the top phase's and their average (WiSE-FT), and
per-image validation results of all three. This scores, per rule, the test
accuracy it would have reached in every run (mean over the runs of a cell),
so that one rule is chosen across cells rather than on one:

* run rules: whether the top phase runs, from the evidence (headroom cuts);
* keep rules: which weights are kept once it ran, from the validation images.

    python bench/keep_rules.py [--results bench/results/quality.jsonl]

Prints a table per rule family and writes `bench/results/keep_rules.md`.
"""

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from quality import FEATURES
from tftransfer.training.evidence import measure_evidence

ROOT = Path(__file__).resolve().parent


def mcnemar(first, second):
    """(b, c): images only `second` gets right, and only `first` does."""
    b = sum(1 for f, s in zip(first, second) if s and not f)
    c = sum(1 for f, s in zip(first, second) if f and not s)
    return b, c


def mean(values):
    return sum(values) / len(values)


def current_rule(run):
    """The rule before this benchmark: the top unless its accuracy is lower by > 1 SE."""
    n = len(run["head"]["val_right"])
    p = mean(run["head"]["val_right"])
    top = mean(run["top"]["val_right"])
    return "head" if top < p - math.sqrt(p * (1 - p) / n) else "top"


def paired(run, against="head", margin=1, loss=True):
    """`top` when it wins `margin` more images than it loses against `against`,
    (and, with `loss`, its mean validation loss is lower), else `against`."""
    b, c = mcnemar(run[against]["val_right"], run["top"]["val_right"])
    better_loss = mean(run["top"]["val_loss"]) <= mean(run[against]["val_loss"])
    return "top" if b - c >= margin and (better_loss or not loss) else against


def wise_unless(run, margin=1):
    """The average, unless the top or the head beats it on paired validation images."""
    b_top, c_top = mcnemar(run["wise"]["val_right"], run["top"]["val_right"])
    if b_top - c_top >= margin and mean(run["top"]["val_loss"]) <= mean(run["wise"]["val_loss"]):
        return "top"
    b_head, c_head = mcnemar(run["wise"]["val_right"], run["head"]["val_right"])
    if b_head - c_head >= margin:
        return "head"
    return "wise"


def top_unless(run, margin=2):
    """The top phase's weights, unless the average beats them on paired validation
    images by `margin` net (then the average, or the head if it beats the average)."""
    b, c = mcnemar(run["top"]["val_right"], run["wise"]["val_right"])
    if b - c < margin:
        return "top"
    b, c = mcnemar(run["wise"]["val_right"], run["head"]["val_right"])
    return "head" if b - c >= margin else "wise"


def top_unless_either(run, margin=2):
    """The top phase's weights, unless the average or the head's get `margin` more of
    the same validation images right, net (the one with more, the average on a tie)."""
    gains = {}
    for name in ("wise", "head"):
        b, c = mcnemar(run["top"]["val_right"], run[name]["val_right"])
        gains[name] = b - c
    best = max(gains, key=lambda name: gains[name])
    return best if gains[best] >= margin else "top"


def sign_test(b, c):
    """One-sided exact p-value of b wins against c losses under no difference."""
    n = b + c
    return sum(math.comb(n, k) for k in range(b, n + 1)) / 2 ** n if n else 1.0


def unless_significant(run, keep, others, alpha=0.1):
    """`keep`'s weights, unless one of `others` beats them on the same validation images
    by a one-sided sign test (McNemar's, exact) at `alpha`: then the one with the lower p."""
    best, p_best = keep, alpha
    for name in others:
        b, c = mcnemar(run[keep]["val_right"], run[name]["val_right"])
        p = sign_test(b, c)
        if p < p_best:
            best, p_best = name, p
    return best


KEEP_RULES = {
    "always head": lambda r: "head",
    "always top": lambda r: "top",
    "always wise": lambda r: "wise",
    "current (accuracy, 1 SE)": current_rule,
    "paired vs head, +1 and loss": lambda r: paired(r, "head", 1),
    "paired vs head, +2 and loss": lambda r: paired(r, "head", 2),
    "paired vs wise, +1 and loss": lambda r: paired(r, "wise", 1),
    "paired vs wise, +2 and loss": lambda r: paired(r, "wise", 2),
    "wise unless paired +1": wise_unless,
    "wise unless paired +2": lambda r: wise_unless(r, 2),
    "top unless paired -1": lambda r: top_unless(r, 1),
    "top unless paired -2": top_unless,
    "top unless paired -3": lambda r: top_unless(r, 3),
    "top unless average or head +2": top_unless_either,
    "top unless average or head +3": lambda r: top_unless_either(r, 3),
    "top unless sign test p < 0.1": lambda r: unless_significant(r, "top", ("wise", "head")),
    "top unless sign test p < 0.05": lambda r: unless_significant(r, "top", ("wise", "head"),
                                                                  0.05),
    "average unless sign test p < 0.1": lambda r: unless_significant(r, "wise",
                                                                     ("top", "head")),
    "average unless sign test p < 0.05": lambda r: unless_significant(r, "wise",
                                                                      ("top", "head"), 0.05),
}


def table(runs, rules, decide):
    """Mean test accuracy per cell under each rule, the mean over cells and the worst gap."""
    cells = defaultdict(list)
    for run in runs:
        cells[(run["cell"], run["base"])].append(run)
    names = sorted(cells)
    lines = ["| rule | " + " | ".join(f"{c} {b}" for c, b in names)
             + " | mean | worst cell vs head |",
             "|---|" + "---|" * (len(names) + 2)]
    scores = {}
    for rule, fn in rules.items():
        row = [100 * mean([decide(run, fn) for run in cells[name]]) for name in names]
        scores[rule] = row
    head_per_cell = [100 * mean([run["head"]["test_accuracy"] for run in cells[name]])
                     for name in names]
    for rule, row in scores.items():
        worst = min(v - h for v, h in zip(row, head_per_cell))
        lines.append(f"| {rule} | " + " | ".join(f"{v:.1f}" for v in row)
                     + f" | {statistics.mean(row):.2f} | {worst:+.1f} vs head |")
    return "\n".join(lines)


def keep_accuracy(run, rule):
    return run[rule(run)]["test_accuracy"]


def run_rules(keep):
    """Run rules: skip the top (keep the head) below a headroom cut, else `keep`."""
    def make(cut, measure):
        def decide(run):
            headroom = 1 - run["evidence"][measure]
            return "head" if headroom < cut else keep(run)
        return decide
    rules = {"always run": keep}
    for measure in ("oof_accuracy", "knn_accuracy"):
        for cut in (0.02, 0.03, 0.04, 0.06, 0.08, 0.10):
            rules[f"{measure} headroom >= {cut}"] = make(cut, measure)
    return rules


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "results" / "quality.jsonl"))
    parser.add_argument("--keep", default="average unless sign test p < 0.1",
                        help="the keep rule under which the run rules are scored")
    args = parser.parse_args()
    runs = [json.loads(line) for line in Path(args.results).read_text().splitlines()
            if line.strip()]
    runs = [r for r in runs if r["method"] == "probe" and "head" in r]
    for run in runs:  # The measure as it is now, on the probe's kept features.
        kept = FEATURES / f"{run['cell']}-{run['base']}-{run['seed']}.npz"
        if kept.is_file():
            with np.load(kept) as arrays:
                labels = arrays["labels"]
                evidence = measure_evidence(arrays["features"].astype(np.float32), labels,
                                            int(labels.max()) + 1)
            run["evidence"] = evidence.to_dict()
    if not runs:
        print("no probe runs: python bench/quality.py --methods probe")
        return 0
    evidence = ["| cell | base | seed | oof accuracy | kNN accuracy | oof log-loss | head test "
                "| top test | wise test | validation images |", "|---|" * 10]
    for r in runs:
        e = r["evidence"]
        evidence.append(f"| {r['cell']} | {r['base']} | {r['seed']} | {e['oof_accuracy']:.3f} "
                        f"| {e['knn_accuracy']:.3f} | {e['oof_log_loss']:.2f} "
                        f"| {100 * r['head']['test_accuracy']:.1f} "
                        f"| {100 * r['top']['test_accuracy']:.1f} "
                        f"| {100 * r['wise']['test_accuracy']:.1f} "
                        f"| {len(r['head']['val_right'])} |")
    keep = table(runs, KEEP_RULES, keep_accuracy)
    run = table(runs, run_rules(KEEP_RULES[args.keep]), keep_accuracy)
    report = (f"`python bench/keep_rules.py`, on {len(runs)} probe runs of "
              "`bench/quality.py`.\n\n## Evidence and the three weights, per run\n\n"
              + "\n".join(evidence) + "\n\n## Keep rules (test accuracy, %)\n\n" + keep
              + f"\n\n## Run rules, with the keep rule '{args.keep}' (test accuracy, %)\n\n"
              + run + "\n")
    print(report)
    (ROOT / "results" / "keep_rules.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
