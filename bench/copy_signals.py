"""Where the copy cut should be: planted copies against every other pair, on both signals.

For each set and variant of `bench/audit.py` (the same splits and planted
faults), computes every pair's joint score (`copies.joint_z`: the robust
z-scores of feature similarity and pHash distance, summed, with the set's
own typical nearest other) and prints the planted copies' lowest scores
beside the highest scores of the pairs that were not planted (the set's
own duplicates among them: oxford17 and clothing hold real ones, which
`bench/audit.py` counts as right), so that `copies.JOINT_Z` is chosen with
both sides in view.

    python bench/copy_signals.py [--base mobilenet_v2] [--sets oxford17,clothing,eurosat]

Appends to bench/results/copy_signals.jsonl.
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import tftransfer
from audit import RESULTS, plant, signals, split
from quality import LITE0, MOBILENET
from tftransfer.reports import copies


def scores(folder, base, cache):
    values = signals(folder, base, cache)
    files = sorted(values)
    unit = np.stack([values[f][0] for f in files])
    bits = np.stack([values[f][1] for f in files])
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest_hash, _, _ = copies.hash_neighbours(bits)
    cuts = copies.copy_cuts(similarity.max(axis=1), nearest_hash)
    distance = np.full(similarity.shape, 64.0)
    views = bits.astype(np.float32)
    for a in range(views.shape[1]):  # Whole against whole and against each crop.
        for b in ({0} if a else range(views.shape[1])):
            one, other = views[:, a], views[:, b]
            d = 64 - (one @ other.T + (1 - one) @ (1 - other.T))
            distance = np.minimum(distance, np.minimum(d, d.T))
    joint = ((similarity - cuts["features"].typical) / cuts["features"].spread
             + (cuts["hash"].typical - distance) / cuts["hash"].spread)
    return files, joint, cuts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="mobilenet_v2")
    parser.add_argument("--sets", default="oxford17,clothing,eurosat")
    parser.add_argument("--variants", default="hard")
    args = parser.parse_args()
    base = (tftransfer.load_base(str(LITE0)) if args.base == "lite0" else
            tftransfer.load_base("mobilenet_v2", weights=str(MOBILENET), input_size=160))
    for name in args.sets.split(","):
        for variant in args.variants.split(","):
            with tempfile.TemporaryDirectory() as work:
                work = Path(work)
                folder = split(work / "faulty", name)
                flipped, leaks, copied = plant(folder, variant)
                files, joint, cuts = scores(folder, base, work / "cache")
                index = {f: i for i, f in enumerate(files)}
                renamed = {moved: original for moved, original in flipped.items()}
                planted = {frozenset((index[a], index[b]))
                           for a, b in (*leaks.items(), *copied.items())}
                i, j = np.triu_indices(len(files), 1)
                order = np.argsort(-joint[i, j])[:200]
                negatives = [float(joint[i[k], j[k]]) for k in order
                             if frozenset((i[k], j[k])) not in planted][:20]
                positives = sorted(float(joint[tuple(p)]) for p in planted)
                result = {"set": name, "variant": variant, "base": args.base,
                          "planted_lowest": [round(v, 2) for v in positives[:10]],
                          "others_highest": [round(v, 2) for v in negatives],
                          "flipped": len(renamed),
                          "cuts": {k: v.__dict__ for k, v in cuts.items()}}
                print(json.dumps(result), flush=True)
                with (RESULTS / "copy_signals.jsonl").open("a") as out:
                    out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
