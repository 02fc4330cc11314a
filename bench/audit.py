"""Benchmark: `tftransfer audit` on real photos with planted faults, on every shared set.

Sets (../shared), each split with seed 0: oxford17 (60 training and 20 test
photos per class), clothing_small (its train/ and test/; validation/ left
out), EuroSAT (its train/ and test/, 200 and 100 tiles per class). Into each,
with seed 0:

* 5% of the training photos moved to another class's folder (label errors);
* 30 test photos copied into train/ (leaks), in one of two variants:
  `standard`, a 90% resize and a JPEG re-encode at quality 70; `hard`, a
  centre crop to 85%, a small colour shift and a JPEG re-encode at quality 50;
* 10 training photos copied byte for byte within train/ (duplicates).

The audit of the split before the faults were planted names what the data
held already (oxford17 and clothing have real duplicates), so that
precision is judged on what the planting added. Goals: leaks and copies,
recall >= 98% at precision >= 95%; label errors, >= 70% of the flipped
among the top 2x as many suspects; the audit within 1.5x one extraction
pass (the data check and the base over every photo, in an empty cache).

    python bench/audit.py [--bases mobilenet_v2,lite0] [--sets oxford17,clothing,eurosat]

Writes bench/results/audit.jsonl (a line per set, variant and base) and audit.md.
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

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import tftransfer  # noqa: E402
from tftransfer.data.sources import split_images  # noqa: E402
from tftransfer.training.feature_cache import cached_features  # noqa: E402

from quality import CLOTHING, EUROSAT, FLOWERS, LITE0, MOBILENET, ROOT  # noqa: E402

RESULTS = ROOT / "results"


def split(root, name, seed=0):
    """Copies one set's split into `root/train/` and `root/test/`."""
    rng = random.Random(seed)
    if name == "oxford17":
        for class_dir in sorted(p for p in FLOWERS.iterdir() if p.is_dir()):
            files = sorted(class_dir.iterdir())
            rng.shuffle(files)
            for part, chosen in (("test", files[:20]), ("train", files[20:])):
                (root / part / class_dir.name).mkdir(parents=True)
                for file in chosen:
                    shutil.copy(file, root / part / class_dir.name / file.name)
        return root
    source = CLOTHING if name == "clothing" else EUROSAT
    for part in ("train", "test"):
        shutil.copytree(source / part, root / part)
    return root


def degrade(image, variant, rng):
    """A near copy: resized and re-encoded, or (`hard`) cropped, shifted and re-encoded."""
    if variant == "standard":
        image = image.resize((int(image.width * 0.9), int(image.height * 0.9)))
        quality = 70
    else:
        w, h = image.size
        dw, dh = int(w * 0.075), int(h * 0.075)
        image = image.crop((dw, dh, w - dw, h - dh))
        shift = np.array([1.0 + rng.uniform(-0.06, 0.06) for _ in range(3)])
        image = Image.fromarray(np.clip(np.asarray(image, np.float32) * shift + 6, 0, 255)
                                .astype("uint8"))
        quality = 50
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def plant(root, variant, seed=0):
    """The faults; returns what was planted, by path."""
    rng = random.Random(seed)
    images = lambda folder: sorted(p for p in folder.rglob("*") if p.is_file())  # noqa: E731
    train = images(root / "train")
    classes = sorted(p.name for p in (root / "train").iterdir())
    flipped = {}
    for file in rng.sample(train, round(0.05 * len(train))):
        other = rng.choice([c for c in classes if c != file.parent.name])
        target = root / "train" / other / f"flipped_{file.name}"
        file.rename(target)
        flipped[str(target)] = str(file)
    leaks = {}
    for file in rng.sample(images(root / "test"), 30):
        copy = root / "train" / file.parent.name / f"leak_{file.stem}.jpg"
        copy.write_bytes(degrade(Image.open(file).convert("RGB"), variant, rng))
        leaks[str(file)] = str(copy)
    copies = {}
    remaining = [f for f in images(root / "train") if not f.name.startswith(("leak_",
                                                                             "flipped_"))]
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


def signals(folder, base, cache):
    """`{file: (unit features, pHash bits, thumbnail)}` as the audit computes them (its cache reused)."""
    from tftransfer.reports.copies import perceptual_hash
    from tftransfer.data.loader import source_files
    from tftransfer.reports.data_audit import _small_views

    out = {}
    splits, _, _ = split_images(folder, base.input_size)
    for dataset in splits.values():
        rows, _ = cached_features(base.features, dataset, cache_dir=cache)
        features = np.concatenate([np.asarray(x).reshape(len(x), -1)
                                   for x, _ in rows.as_numpy_iterator()])
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        views = [_small_views(images) for images, _ in dataset]
        bits = perceptual_hash(np.concatenate([grey for grey, _ in views]))
        thumbnails = np.concatenate([small for _, small in views])
        out.update(zip(source_files(dataset), zip(features, bits, thumbnails)))
    return out


def planted_signals(folder, base, cache, planted):
    """Each planted pair's feature similarity, pHash distance and aligned similarity."""
    from tftransfer.reports.copies import aligned_similarity

    values = signals(folder, base, cache)
    pairs = []
    for a, b in planted:
        (fa, ha, ta), (fb, hb, tb) = values[a], values[b]
        distance = min([(ha[0] != view).sum() for view in hb]
                       + [(hb[0] != view).sum() for view in ha])
        aligned = aligned_similarity(np.stack([ta, tb]), [(0, 1)])[0]
        pairs.append((round(float(fa @ fb), 4), int(distance), round(float(aligned), 4)))
    return sorted(pairs)


def measure(name, variant, base, base_name, before_pairs, work):
    faulty = split(work / f"faulty-{variant}", name)
    flipped, leaks, copies = plant(faulty, variant)
    extraction = extraction_pass(faulty, base, work / f"e-{variant}")
    report, seconds = timed_audit(faulty, base, work / f"a-{variant}")
    clean_root = str(work / "clean")
    before = {frozenset(p.replace(clean_root, str(faulty)) for p in pair)
              for pair in before_pairs}
    result = score(report, before, flipped, leaks, copies)
    planted = {frozenset(p) for p in (*leaks.items(), *copies.items())}
    found = pairs_of(report, ("leak", "duplicate"))
    result.update(set=name, variant=variant, base=base_name, seconds=seconds,
                  extraction_seconds=extraction, time_ratio=seconds / extraction,
                  pre_existing_pairs=len(before), missed=sorted(
                      Path(f).name for pair in planted - found for f in pair),
                  copy_cuts=report.to_dict()["copy_cuts"], summary=report.summary(),
                  planted_signals=planted_signals(faulty, base, work / f"a-{variant}",
                                                  [tuple(p) for p in planted]))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", default="mobilenet_v2,lite0")
    parser.add_argument("--sets", default="oxford17,clothing,eurosat")
    parser.add_argument("--variants", default="standard,hard")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for base_name in args.bases.split(","):
        base = (tftransfer.load_base(str(LITE0)) if base_name == "lite0" else
                tftransfer.load_base("mobilenet_v2", weights=str(MOBILENET), input_size=160))
        for name in args.sets.split(","):
            with tempfile.TemporaryDirectory() as work:
                work = Path(work)
                clean = split(work / "clean", name)
                before = pairs_of(tftransfer.audit(clean, base, cache_dir=work / "c0"),
                                  ("leak", "duplicate"))
                for variant in args.variants.split(","):
                    result = measure(name, variant, base, base_name, before, work)
                    print(json.dumps(result), flush=True)
                    with (RESULTS / "audit.jsonl").open("a") as out:
                        out.write(json.dumps(result) + "\n")
    summarise()


def summarise():
    runs = [json.loads(line) for line in (RESULTS / "audit.jsonl").read_text().splitlines()]
    lines = ["`python bench/audit.py`: planted faults in every shared set (see its docstring)",
             "", "| set | variant | base | copies recall | precision | lowest planted "
             "similarity | cuts (features, hash bits, aligned) | labels in top 2x "
             "| audit / pass |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        cuts = r["copy_cuts"]
        lines.append(
            f"| {r['set']} | {r['variant']} | {r['base']} | {r['copies_recall']:.1%} "
            f"({r['copies_planted'] - len(r['missed']) // 2}/{r['copies_planted']}) "
            f"| {r['copies_precision']:.1%} | {r['lowest_planted_similarity']} "
            f"| {cuts['features']['value']}, {cuts['hash']['value']}, "
            f"{(cuts.get('aligned') or {}).get('value', '-')} "
            f"| {r['label_recall_top2x']:.1%} | {r['time_ratio']:.2f} |")
    (RESULTS / "audit.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
