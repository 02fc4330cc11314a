"""Every command, given a bad value, answers with one line and exit status 2: no traceback."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tftransfer import cli


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, image_folder_path):
    root = tmp_path_factory.mktemp("bad")
    image = next(iter(sorted(image_folder_path.rglob("*.png"))))
    (root / "latin1.csv").write_bytes(f"path,label\n{image},caf\xe9\n".encode("latin-1"))
    np.savez(root / "objects.npz", images=np.array([object()] * 2, dtype=object),
             labels=np.array([0, 1]))
    (root / "corrupt.keras").write_bytes(b"PK\x03\x04 not really a zip")
    (root / "a_file").write_text("not a folder")
    # A SavedModel that tftransfer did not write: no serving_images signature.
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": x * 2},
                           input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(root / "foreign" / "1"),
                        signatures={"serving_default": module.f})
    # An export whose metadata.json is malformed.
    tf.saved_model.save(module, str(root / "malformed" / "1"),
                        signatures={"serving_default": module.f})
    (root / "malformed" / "1" / "assets").mkdir(exist_ok=True)
    (root / "malformed" / "1" / "assets" / "labels.txt").write_text("a\nb\n")
    (root / "malformed" / "1" / "assets.extra").mkdir()
    (root / "malformed" / "1" / "assets.extra" / "metadata.json").write_text("{not json")
    (root / "taken" / "1").mkdir(parents=True)
    return {"root": root, "image": image, "folder": image_folder_path}


CASES = [
    # (command line, what the one line must name)
    ("predict --model {root}/foreign --batch-size 0 {image}", "--batch-size"),
    ("predict --model {root}/foreign --batch-size -1 {image}", "--batch-size"),
    ("predict --model {root}/foreign --top-k 0 {image}", "--top-k"),
    ("evaluate --model {root}/foreign --data {folder} --top-k 0", "--top-k"),
    ("train --data {folder} --label-sep=", "--label-sep"),
    ("train --data {folder} --top-learning-rate -1", "--top-learning-rate"),
    ("train --data {folder} --top-learning-rate auto", "--top-learning-rate"),
    ("train --data {folder} --validation-split 1.5", "--validation-split"),
    ("train --data {folder} --head-epochs -1", "--head-epochs"),
    ("train --data {folder} --batch-size abc", "--batch-size"),
    ("train --data {folder} --dropout 1", "--dropout"),
    ("audit {folder} --near-duplicate 0", "--near-duplicate"),
    ("train --data {root}/latin1.csv --dry-run", "latin1.csv:2: not UTF-8"),
    ("train --data {root}/objects.npz --dry-run", "objects.npz"),
    ("train --data {root}/missing_folder", "missing_folder"),
    ("export --model {root}/corrupt.keras --export {root}/out", "corrupt.keras"),
    ("export --model {root}/corrupt.keras --export {root}/out --tflite float8",
     "--tflite: unknown variant(s) float8"),
    ("export --model {root}/corrupt.keras --export {root}/out --tflite all",
     "--tflite needs --data"),
    ("evaluate --model {root}/foreign --data {folder}", "did not export"),
    ("predict --model {root}/malformed {image}", "metadata.json is malformed"),
    # Outputs that train could only fail on after training are refused before it.
    ("train --save-keras {root}/model", "--save-keras must name a .keras file"),
    ("train --export {root}/a_file", "a_file is a file"),
    ("train --export {root}/taken --model-version 1", "already exists"),
    # Renamed flags say what they are called now.
    ("predict --model {root}/foreign {image} --output p.csv", "--output is now --predictions"),
    ("export --model {root}/corrupt.keras --output {root}/out", "--output is now --export DIR"),
]


@pytest.mark.parametrize("line, names", CASES, ids=[c[0].split(" --")[0] + " | " + c[1]
                                                     for c in CASES])
def test_a_bad_value_gives_one_line_and_exit_status_2(bad_inputs, capsys, tmp_path,
                                                      monkeypatch, line, names):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFTRANSFER_RUNS_DIR", str(tmp_path / "runs"))
    args = line.format(**bad_inputs).split(" ")
    try:
        status = cli.main(args)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    errors = [l for l in err.splitlines() if "error:" in l]
    assert len(errors) == 1 and names in errors[0], err
    assert not (tmp_path / "runs").exists()  # Nothing trained.


def test_a_replayed_run_can_be_replayed_again(tmp_path):
    from tftransfer.training.runs import RunRecord, load_config

    first = RunRecord(tmp_path / "first")
    first.write_config({"head_epochs": 2, "replayed_digest": "abc"}, seed=1, digest="abc")
    options, _ = load_config(first.config_path)
    assert "replayed_digest" not in options and options["head_epochs"] == 2
    assert json.loads(first.config_path.read_text())["data_digest"] == "abc"


def test_a_failure_after_training_keeps_the_model_and_says_how_to_finish(
        tiny_base_file, image_folder_path, tmp_path, capsys, monkeypatch):
    import tftransfer
    from tftransfer.errors import TransferError
    from tftransfer.models.saving import load_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFTRANSFER_RUNS_DIR", str(tmp_path / "runs"))

    def taken(*args, **kwargs):  # Another process took the version meanwhile.
        raise TransferError("exports/1 was written by another process meanwhile")

    monkeypatch.setattr(tftransfer, "export_saved_model", taken)
    status = cli.main(["train", "--data", str(image_folder_path), "--base",
                       str(tiny_base_file), "--head-epochs", "1", "--top-epochs", "0",
                       "--batch-size", "8", "--quiet", "--export", str(tmp_path / "exports"),
                       "--feature-cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert status == 2
    kept = next((tmp_path / "runs").glob("*/model.keras"))
    assert f"the trained model is kept in {kept}" in err
    assert f"tftransfer export --model {kept} --export {tmp_path / 'exports'}" in err
    assert kept.with_suffix(".labels.txt").read_text().split() == ["blue", "green", "red"]
    assert load_model(kept).output_shape == (None, 3)


def test_train_with_skipped_files_ends_with_status_3(tiny_base_file, image_folder_path,
                                                     tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFTRANSFER_RUNS_DIR", str(tmp_path / "runs"))
    data = tmp_path / "data"
    shutil.copytree(image_folder_path, data)
    (data / "red" / "broken.png").write_bytes(b"not a png")
    status = cli.main(["train", "--data", str(data), "--base", str(tiny_base_file),
                       "--head-epochs", "1", "--top-epochs", "0", "--batch-size", "8",
                       "--quiet", "--export", str(tmp_path / "exports"),
                       "--feature-cache", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert status == 3
    assert (tmp_path / "exports" / "1" / "saved_model.pb").is_file()  # Done all the same.
    assert "1 file(s) could not be used and were skipped" in out
