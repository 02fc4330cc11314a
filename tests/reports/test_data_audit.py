import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tftransfer
from tftransfer.reports.audit_page import save_audit
from tftransfer.reports.data_audit import exact_leaks, neighbourhood, write_clean_list

from conftest import write_audit_folder


@pytest.fixture
def base(pixel_base_file):
    return tftransfer.load_base(str(pixel_base_file), preprocessing="unit")


def recompressed(source, target):
    """A copy as people make them: resized to 90% and saved as a JPEG of quality 70."""
    image = Image.open(source).convert("RGB")
    image = image.resize((int(image.width * 0.9), int(image.height * 0.9)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=70)
    target.write_bytes(buffer.getvalue())


def test_a_clean_set_reports_nothing(base, tmp_path):
    report = tftransfer.audit(write_audit_folder(tmp_path / "clean"), base,
                              cache_dir=tmp_path / "cache")
    assert report.findings == []
    assert report.counts == {"train": 36, "test": 12} and report.label_check == "cleanlab"
    assert report.test_accuracy["all"] == 1.0 and report.test_accuracy["leaked"] == 0


def test_a_planted_duplicate_leak_label_error_and_outlier_are_each_found(base, tmp_path):
    root = write_audit_folder(tmp_path / "data")
    train, test = root / "train", root / "test"
    shutil.copy(train / "red" / "train00.png", train / "red" / "copy.png")
    recompressed(train / "green" / "train03.png", test / "green" / "leaked.jpg")
    shutil.move(train / "red" / "train05.png", train / "blue" / "mislabelled.png")
    Image.new("RGB", (32, 32), (128, 128, 128)).save(train / "blue" / "blank.png")
    report = tftransfer.audit(root, base, cache_dir=tmp_path / "cache")
    found = {(f.kind, f.file.split("/")[-1]): f for f in report.findings}
    (duplicate,) = report.of_kind("duplicate")  # Either file may be taken for the copy.
    assert {duplicate.file, duplicate.other} == {str(train / "red" / "train00.png"),
                                                 str(train / "red" / "copy.png")}
    assert duplicate.score == 1.0
    leak = found[("leak", "leaked.jpg")]
    assert leak.other.endswith("green/train03.png") and leak.split == "test"
    assert 0.95 <= leak.score < 1.0
    label = found[("label", "mislabelled.png")]
    assert label.other == "red" and label.score > 0.5
    assert ("outlier", "blank.png") in found
    assert len(report.findings) == 4  # Nothing else, in a set of distinct photos.
    assert report.test_accuracy["leaked"] == 1
    assert "1 leak(s)" in report.summary()

    page = save_audit(report, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert {f["kind"] for f in saved["findings"]} >= {"duplicate", "leak", "label", "outlier"}
    assert set(saved["findings"][0]) == {"kind", "file", "other", "score", "split"}
    assert "leaked.jpg" in (tmp_path / "out" / "audit.csv").read_text()
    assert page.read_text().count("data:image/jpeg;base64,") >= 6  # Pairs side by side.
    kept = write_clean_list(report, tmp_path / "keep.txt").read_text().splitlines()
    assert len(kept) == sum(report.counts.values()) - 2  # Neither the copy nor the leak.
    assert not any(k.endswith("leaked.jpg") for k in kept)
    assert sum(k.endswith(("copy.png", "red/train00.png")) for k in kept) == 1


def test_exact_leaks_need_no_decoding(tmp_path):
    root = write_audit_folder(tmp_path / "data", train=2, test=1)
    shutil.copy(root / "train" / "red" / "train01.png", root / "test" / "red" / "again.png")
    assert exact_leaks(root) == [(str(root / "test" / "red" / "again.png"),
                                  str(root / "train" / "red" / "train01.png"))]


def test_close_pairs_match_a_plain_double_loop():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(300, 8))
    rows[150] = rows[3] + 0.01
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    sims = unit @ unit.T
    expected = {(i, j) for i in range(300) for j in range(i + 1, 300) if sims[i, j] >= 0.9}
    assert {(i, j) for i, j, _ in neighbourhood(unit, 0.9, block=64).pairs} == expected
    assert (3, 150) in expected


def test_the_cli_audit_writes_the_page_and_the_clean_list(pixel_base_file, tmp_path, capsys):
    from tftransfer import cli

    root = write_audit_folder(tmp_path / "data", train=6, test=2)
    shutil.copy(root / "train" / "red" / "train00.png", root / "test" / "red" / "copy.png")
    assert cli.main(["audit", str(root), "--base", str(pixel_base_file), "--output",
                     str(tmp_path / "out"), "--write-clean-list", str(tmp_path / "keep.txt"),
                     "--feature-cache", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "leak" in out and "copy.png" in out and "audit: " in out
    assert (tmp_path / "out" / "audit.html").is_file()
    assert "copy.png" not in (tmp_path / "keep.txt").read_text()


def test_neighbour_probabilities_follow_the_neighbours_and_leave_copies_out():
    from tftransfer.reports.data_audit import neighbour_probabilities, neighbourhood

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 16)) * 3
    rows = np.concatenate([centres[c] + rng.normal(size=(20, 16)) for c in (0, 1)])
    labels = np.repeat([0, 1], 20)
    labels[5] = 1  # A photo of class 0 given class 1.
    rows = np.concatenate([rows, rows[5:6]])  # And a byte copy of it, also given 1.
    labels = np.append(labels, 1)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    probabilities = neighbour_probabilities(neighbourhood(unit, 0.95, k=5), labels, 2)
    assert np.allclose(probabilities.sum(axis=1), 1)
    assert probabilities[5, 0] > 0.8  # Its neighbours, not its copy, speak for it.
    assert probabilities[:5, 0].min() > 0.5 and probabilities[20:40, 1].min() > 0.5


def test_a_copy_whose_features_are_below_the_old_cut_is_found_by_its_hash(base, tmp_path):
    # Brighter, with less contrast: the pixels' features move (below cosine 0.95,
    # the old fixed cut), the grey image's DCT signs, the perceptual hash, do not.
    # (Resized, re-encoded copies keep their hash too: tests/reports/test_copies.py.)
    root = write_audit_folder(tmp_path / "data")
    source = root / "test" / "red" / "test01.png"
    image = np.asarray(Image.open(source).convert("RGB"), np.float32)
    copy = root / "train" / "red" / "copy.png"
    Image.fromarray(np.clip(image * 0.7 + 60, 0, 255).astype("uint8")).save(copy)
    report = tftransfer.audit(root, base, cache_dir=tmp_path / "cache")
    leaks = report.of_kind("leak")
    assert [(f.file, f.other) for f in leaks] == [(str(source), str(copy))]
    assert leaks[0].score < 0.95
    cuts = report.to_dict()["copy_cuts"]
    assert cuts["hash"]["value"] >= 4 and "median" in cuts["features"]["why"]


def test_a_cropped_shifted_reencoded_leak_is_found_and_the_aligned_cut_recorded(base, tmp_path):
    root = write_audit_folder(tmp_path / "data")
    source = root / "test" / "red" / "test01.png"
    image = Image.open(source).convert("RGB").resize((160, 160), Image.BICUBIC)
    crop = image.crop((12, 12, 148, 148))  # The central 85%.
    shifted = np.clip(np.asarray(crop, np.float32) * [1.06, 1.0, 0.94] + 6, 0, 255)
    copy = root / "train" / "red" / "copy.jpg"
    Image.fromarray(shifted.astype("uint8")).save(copy, quality=50)
    report = tftransfer.audit(root, base, cache_dir=tmp_path / "cache")
    assert [(f.file, f.other) for f in report.of_kind("leak")] == [(str(source), str(copy))]
    cuts = report.to_dict()["copy_cuts"]["aligned"]
    assert cuts["value"] == 0.985 and "aligned" in cuts["why"]


def test_a_pair_far_apart_on_features_and_hash_is_a_copy_when_its_pixels_align():
    from tftransfer.reports.data_audit import _near_copies, neighbourhood

    def scene(share, seed):  # A smooth colour pattern, whole or its central share.
        x = (np.arange(48) + 0.5) / 48 * share + (1 - share) / 2
        grid = np.add.outer(np.sin((7 + seed) * x), np.cos((5 + 2 * seed) * x))[..., None]
        return 120 + 100 * np.sin(grid * [1.0, 2.0, 3.0])

    rng = np.random.default_rng(0)
    thumbnails = np.stack([scene(1.0, 0), scene(0.85, 0) * 0.9 + 10]
                          + [scene(1.0, seed) for seed in range(1, 7)]).astype("uint8")
    unit = np.linalg.qr(rng.normal(size=(16, 8)))[0].T  # Orthogonal: no two alike.
    bits = rng.random((8, 4, 64)) > 0.5  # Random hashes: about 32 bits apart.
    pairs, cuts = _near_copies(unit, neighbourhood(unit, 0.9), bits, thumbnails, None)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert cuts["aligned"].value == 0.985


def test_two_photos_of_one_object_are_not_paired(base, tmp_path):
    root = write_audit_folder(tmp_path / "data")
    rng = np.random.default_rng(5)
    texture = rng.integers(40, 216, (4, 4, 3))
    # The same object seen twice: its texture, lit and placed a little differently.
    for name, change in (("view1.png", 0), ("view2.png", 1)):
        seen = np.clip(texture + rng.integers(-30, 30, texture.shape) * change, 0, 255)
        pixels = Image.fromarray(seen.astype("uint8")).resize((32, 32), Image.BILINEAR)
        if change:
            pixels = pixels.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels.save(root / "train" / "green" / name)
    report = tftransfer.audit(root, base, cache_dir=tmp_path / "cache")
    assert report.of_kind("duplicate") == []


def test_the_cli_audit_uses_its_batch_size_and_a_throwaway_cache_with_none(
        pixel_base_file, tmp_path, capsys, monkeypatch):
    from tftransfer import cli
    from tftransfer.reports import data_audit

    seen = {}
    real = data_audit.audit

    def spy(*args, **kwargs):
        seen.update(kwargs, existed=Path(kwargs["cache_dir"]).is_dir())
        return real(*args, **kwargs)

    monkeypatch.setattr(data_audit, "audit", spy)
    root = write_audit_folder(tmp_path / "data", train=4, test=2)
    assert cli.main(["audit", str(root), "--base", str(pixel_base_file), "--output",
                     str(tmp_path / "out"), "--feature-cache", "none",
                     "--batch-size", "5"]) == 0
    assert seen["batch_size"] == 5 and seen["existed"]
    assert not Path(seen["cache_dir"]).exists()  # Thrown away after the audit.
