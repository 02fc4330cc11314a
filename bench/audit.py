"""Benchmark: `tftransfer audit` on real photos with planted faults, and on the clothing set.

oxford17 flowers (../shared), split with seed 0 into 60 training and 20 test
photos per class, then, with seed 0:

* 5% of the training photos (51) moved to another class's folder;
* 30 test photos copied into train/ after a 90% resize and a JPEG
  re-encode at quality 70 (leaks);
* 10 training photos copied byte for byte within train/ (duplicates).

The same audit of the split before the faults were planted names what the
data held already (oxford17 has real duplicates), so that precision is
judged on what the planting added. Goals: leaks and exact copies, recall
>= 95% at precision >= 95%; label errors, recall >= 70% among the top 2x
as many as were flipped; the whole audit within 1.5x one extraction pass
(the data check and the base over every photo, in an empty cache).

Then the clothing set as published (its own train/ validation/ test/),
whose findings are written with thumbnails to bench/results/audit_clothing/.

    python bench/audit.py [--base mobilenet_v2|lite0]

Writes bench/results/audit.json and audit.md.
"""

import argparse
import io
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from PIL import Image  # noqa: E402

import tftransfer  # noqa: E402
from tftransfer.audit_page import save_audit  # noqa: E402
from tftransfer.data.sources import split_images  # noqa: E402
from tftransfer.feature_cache import cached_features  # noqa: E402

from top_phase import CLOTHING, FLOWERS, LITE0, MOBILENET, ROOT  # noqa: E402

RESULTS = ROOT / "results"


def split(root, seed=0):
    rng = random.Random(seed)
    for class_dir in sorted(p for p in FLOWERS.iterdir() if p.is_dir()):
        files = sorted(class_dir.iterdir())
        rng.shuffle(files)
        for name, chosen in (("test", files[:20]), ("train", files[20:])):
            (root / name / class_dir.name).mkdir(parents=True)
            for file in chosen:
                shutil.copy(file, root / name / class_dir.name / file.name)
    return root


def plant(root, seed=0):
    """The faults; returns what was planted, by path."""
    rng = random.Random(seed)
    train = sorted((root / "train").rglob("*.jpg"))
    classes = sorted(p.name for p in (root / "train").iterdir())
    flipped = {}
    for file in rng.sample(train, round(0.05 * len(train))):
        other = rng.choice([c for c in classes if c != file.parent.name])
        target = root / "train" / other / f"flipped_{file.name}"
        file.rename(target)
        flipped[str(target)] = str(file)
    leaks = {}
    for file in rng.sample(sorted((root / "test").rglob("*.jpg")), 30):
        image = Image.open(file).convert("RGB")
        image = image.resize((int(image.width * 0.9), int(image.height * 0.9)))
        copy = root / "train" / file.parent.name / f"leak_{file.name}"
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=70)
        copy.write_bytes(buffer.getvalue())
        leaks[str(file)] = str(copy)
    copies = {}
    remaining = [f for f in sorted((root / "train").rglob("image_*.jpg"))]
    for file in rng.sample(remaining, 10):
        copy = file.with_name(f"copy_{file.name}")
        shutil.copy(file, copy)
        copies[str(copy)] = str(file)
    return flipped, leaks, copies


def extraction_pass(folder, base, cache):
    """What any training pays once: the data check and the base over every photo."""
    start = time.perf_counter()
    splits, _, _ = split_images(folder, base.input_size)
    for dataset in splits.values():
        cached_features(base.features, dataset, cache_dir=cache)
    return time.perf_counter() - start


def timed_audit(folder, base, cache):
    start = time.perf_counter()
    report = tftransfer.audit(folder, base, cache_dir=cache)
    return report, time.perf_counter() - start


def pairs_of(report, kinds):
    return {frozenset((f.file, f.other)) for f in report.findings if f.kind in kinds}


def groups(pairs):
    """Each file's group of copies: the connected components of `pairs`."""
    parent = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for a, b in pairs:
        parent[root(a)] = root(b)
    return root


def score(report, before, flipped, leaks, copies):
    """Recall and precision of what was planted, against the audit of the clean split.

    A pair found is right when both files are copies of one photo: planted,
    or already in the data (the clean split's audit), or a copy of such a
    copy (a planted copy of a photo that oxford17 holds twice pairs with both).
    """
    planted = {frozenset(p) for p in (*leaks.items(), *copies.items())}
    # A moved photo is the same photo: its pairs in the clean split hold for it.
    before = before | {frozenset(moved if f == original else f for f in pair)
                       for moved, original in flipped.items() for pair in before
                       if original in pair}
    found = pairs_of(report, ("leak", "duplicate")) - before
    same = groups([tuple(p) for p in planted | before]
                  + [(moved, original) for moved, original in flipped.items()])
    right = {pair for pair in found if len({same(f) for f in pair}) == 1}
    hits = planted & found
    scores = {frozenset((f.file, f.other)): f.score for f in report.findings}
    wrong = sorted((scores[p], sorted(Path(f).name for f in p)) for p in found - right)
    labels = [f for f in report.findings if f.kind == "label"]
    top = {f.file for f in sorted(labels, key=lambda f: -f.score)[:2 * len(flipped)]}
    return {"copies_recall": len(hits) / len(planted),
            "copies_precision": len(right) / max(len(found), 1),
            "copies_found": len(found), "copies_planted": len(planted),
            "lowest_planted_similarity": min(scores[p] for p in hits) if hits else None,
            "wrong_pairs": wrong,
            "label_recall_top2x": len(top & set(flipped)) / len(flipped),
            "labels_flagged": len(labels), "labels_flipped": len(flipped)}


def flowers(base):
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        clean = split(work / "clean")
        before = pairs_of(tftransfer.audit(clean, base, cache_dir=work / "c0"),
                          ("leak", "duplicate"))
        faulty = split(work / "faulty")
        flipped, leaks, copies = plant(faulty)
        # The fastest of 3 of each, interleaved, each in an empty cache: the
        # machine runs at one of two speeds from minute to minute.
        extractions, audits = [], []
        for run in range(3):
            extractions.append(extraction_pass(faulty, base, work / f"e{run}"))
            report, seconds = timed_audit(faulty, base, work / f"a{run}")
            audits.append(seconds)
        extraction, seconds = min(extractions), min(audits)
        before = {frozenset(str(Path(p).as_posix()).replace("/clean/", "/faulty/")
                            for p in pair) for pair in before}
        result = score(report, before, flipped, leaks, copies)
        result.update(seconds=seconds, extraction_seconds=extraction,
                      audit_runs=audits, extraction_runs=extractions,
                      time_ratio=seconds / extraction, pre_existing_pairs=len(before),
                      test_accuracy=report.test_accuracy, summary=report.summary())
        save_audit(report, RESULTS / "audit_oxford17", title="oxford17 with planted faults")
        return result


def clothing(base):
    with tempfile.TemporaryDirectory() as cache:
        report = tftransfer.audit(CLOTHING, base, cache_dir=cache)
    save_audit(report, RESULTS / "audit_clothing", title="clothing_small as published")
    return {"summary": report.summary(), "seconds": report.seconds,
            "test_accuracy": report.test_accuracy,
            "by_kind": {k: len(report.of_kind(k)) for k in ("leak", "duplicate", "label",
                                                           "outlier")}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="mobilenet_v2", choices=("mobilenet_v2", "lite0"))
    args = parser.parse_args()
    base = (tftransfer.load_base(str(LITE0)) if args.base == "lite0" else
            tftransfer.load_base("mobilenet_v2", weights=str(MOBILENET), input_size=160))
    results = {"base": args.base, "oxford17": flowers(base), "clothing": clothing(base)}
    print(json.dumps(results, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"audit_{args.base}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
