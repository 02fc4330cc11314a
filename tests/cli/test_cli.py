import subprocess
import sys
from pathlib import Path

import pytest

from tftransfer import cli

from conftest import write_image_folder


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tftransfer.cli", *args],
                          capture_output=True, text=True, timeout=300)


def run_here(capsys, caplog, *args):
    """`cli.main` in this process: `(status, stdout, log)`, without a TensorFlow start-up."""
    caplog.clear()
    with caplog.at_level("INFO", logger="tftransfer"):
        status = cli.main([str(arg) for arg in args])
    return status, capsys.readouterr().out, caplog.text


@pytest.mark.slow
def test_train_then_predict_end_to_end(tiny_base_file, split_folder_path, tmp_path, capsys,
                                       caplog):
    export = tmp_path / "export"
    result = run_cli("train", "--data", str(split_folder_path), "--base", str(tiny_base_file),
                     "--export", str(export), "--head-epochs", "2", "--top-epochs", "1",
                     "--unfreeze", "3", "--batch-size", "8", "--quiet",
                     "--save-keras", str(tmp_path / "model.keras"))
    assert result.returncode == 0, result.stderr
    assert "test accuracy:" in result.stdout
    assert f"exported to {export / '1'}" in result.stdout
    assert (export / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "model.keras").is_file()

    # The console script ran above; the other commands run in this process.
    image = next((split_folder_path / "test" / "red").iterdir())
    status, out, _ = run_here(capsys, caplog, "predict", "--model", export, image,
                              "--top-k", "2")
    assert status == 0
    line = out.strip().splitlines()[-1]
    assert line.startswith(f"{image}: ")
    assert len(line.split(",")) == 2

    status, out, _ = run_here(capsys, caplog, "export", "--model", tmp_path / "model.keras",
                              "--export", export, "--data", split_folder_path, "--tflite",
                              "float16,dynamic_range")
    assert status == 0
    assert f"exported to {export / '2'}" in out
    assert "float16" in out and "dynamic_range" in out
    tflite = export / "tflite" / "model_float16.tflite"
    status, served, _ = run_here(capsys, caplog, "predict", "--model", tflite, image,
                                 "--top-k", "2")
    assert status == 0
    # The TFLite model ranks the classes as the SavedModel does.
    assert served.strip().splitlines()[-1].split(" ")[1] == line.split(" ")[1]


@pytest.mark.slow
def test_second_train_reuses_the_feature_cache_and_clear_cache_empties_it(
        tiny_base_file, split_folder_path, tmp_path, capsys, caplog):
    cache = tmp_path / "cache"
    args = ["train", "--data", str(split_folder_path), "--base", str(tiny_base_file),
            "--export", str(tmp_path / "export"), "--head-epochs", "1",
            "--top-epochs", "0", "--quiet", "--feature-cache", str(cache)]
    first = run_cli(*args)  # Another process: what it left on disk is reused.
    assert first.returncode == 0, first.stderr
    assert f"feature cache: extracting features to {cache}" in first.stderr
    status, _, log = run_here(capsys, caplog, *args)
    assert status == 0 and f"feature cache: reusing {cache}" in log
    assert "extracting" not in log
    status, _, log = run_here(capsys, caplog, *args, "--feature-cache", "none")
    assert status == 0 and "feature cache" not in log

    status, out, _ = run_here(capsys, caplog, "clear-cache", "--feature-cache", cache)
    assert status == 0
    assert "deleted 2 cache entries" in out  # train and val
    assert list(cache.iterdir()) == []


def test_clear_cache_names_the_entries_it_keeps_and_exits_1(tmp_path, capsys, caplog):
    from tftransfer import _locks
    from tftransfer.training import feature_cache

    entry = tmp_path / ("a" * 64)
    entry.mkdir()
    (entry / feature_cache.MANIFEST).write_text("{}")
    # As a training that streams from the entry holds it.
    reading = _locks.try_lock(entry / feature_cache.MANIFEST, shared=True)
    status = cli.main(["clear-cache", "--feature-cache", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 1 and "deleted 0 cache entries" in out
    assert f"kept {entry}: a training is reading it" in err and entry.is_dir()
    reading.close()
    status, out, _ = run_here(capsys, caplog, "clear-cache", "--feature-cache", tmp_path)
    assert status == 0 and "deleted 1 cache entry" in out and not entry.exists()


def test_check_data_reports_each_skipped_file_and_the_totals(tmp_path, capsys):
    from conftest import write_bad_corpus

    root = tmp_path / "messy"
    usable, skipped = write_bad_corpus(root)
    assert cli.main(["check-data", str(root)]) == 2  # birds/ is empty
    captured = capsys.readouterr()
    for path, words in skipped.items():
        assert f"skipped {root / path}: " in captured.out and words in captured.out
    total = len(usable) + len(skipped)
    assert f"{total} file(s) found = {len(usable)} used + {len(skipped)} skipped" \
        in captured.out
    assert "no usable images for class(es) birds" in captured.err
    (root / "birds").rmdir()
    assert cli.main(["check-data", str(root)]) == 0


def test_check_data_takes_every_source_that_train_takes(image_folder_path, tmp_path, capsys):
    import numpy as np

    rows = [f"{p},{folder.name}" for folder in sorted(image_folder_path.iterdir())
            for p in sorted(folder.iterdir())]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows += [f"{tmp_path / 'broken.png'},red", f"{tmp_path / 'gone.png'},red"]
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    assert cli.main(["check-data", str(tmp_path / "labels.csv")]) == 0
    out = capsys.readouterr().out
    assert f"skipped {tmp_path / 'broken.png'}: " in out and "gone.png" in out
    used = len(rows) - 2
    assert f"{len(rows)} example(s) found = {used} used + 2 skipped" in out
    assert out.count("train: ") == 1 and out.count("validation: ") == 1

    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, images=np.zeros((6, 8, 8, 3), np.uint8), labels=np.arange(6) % 2)
    assert cli.main(["check-data", "--data", str(arrays), "--class-names", "a,b"]) == 0
    assert "6 example(s) found = 6 used + 0 skipped" in capsys.readouterr().out
    assert cli.main(["check-data"]) == 2


@pytest.mark.slow
def test_train_takes_a_csv_augmentation_and_class_weights(image_folder_path, tiny_base_file,
                                                         tmp_path):
    rows = [f"{p},{folder.name}" for folder in sorted(image_folder_path.iterdir())
            for p in sorted(folder.iterdir())]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    result = run_cli("train", "--data", str(tmp_path / "labels.csv"), "--base",
                     str(tiny_base_file), "--export", str(tmp_path / "export"),
                     "--head-epochs", "1", "--top-epochs", "1", "--unfreeze", "2",
                     "--augment", "flip,rotation=0.1,zoom=0.1,contrast=0.2",
                     "--augmented-views", "2", "--class-weight", "auto", "--quiet",
                     "--feature-cache", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert "data: 3 classes from" in result.stdout
    assert "feature cache: extracting features to" in result.stderr
    bad = run_cli("train", "--augment", "spin=3")
    assert bad.returncode == 2 and "unknown augmentation 'spin'" in bad.stderr


def test_train_takes_arrays_and_an_image_cache_folder(image_folder_path, tiny_base_file,
                                                     tmp_path, capsys, caplog):
    import numpy as np

    common = ["--base", str(tiny_base_file), "--export", str(tmp_path / "export"),
              "--head-epochs", "1", "--top-epochs", "0", "--quiet",
              "--feature-cache", "none"]
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "arrays.npz", images=rng.integers(0, 255, (12, 20, 20, 3)),
             labels=np.arange(12) % 3)
    assert cli.main(["train", "--data", str(tmp_path / "arrays.npz"),
                     "--class-names", "ant,bee,cat", *common]) == 0
    assert "data: 3 classes from" in capsys.readouterr().out
    assert (tmp_path / "export" / "1" / "assets" / "labels.txt").read_text().split() == [
        "ant", "bee", "cat"]

    cache = tmp_path / "image_cache"
    args = ["train", "--data", str(image_folder_path), "--image-cache", str(cache),
            *common]
    with caplog.at_level("INFO", logger="tftransfer"):
        assert cli.main(args) == 0
        assert f"image cache: wrote {cache}" in caplog.text
        caplog.clear()
        assert cli.main(args) == 0
        assert f"image cache: reusing {cache}" in caplog.text


def test_bases_lists_the_registry(capsys):
    assert cli.main(["bases"]) == 0
    out = capsys.readouterr().out
    assert "fashion_mobilenet_v2" in out and "efficientnet_v2_b0" in out
    assert "keras.applications.MobileNetV2 (taps block_14_add)" in out


def test_help_explains_each_command(capsys):
    # In-process: the console script itself runs in the subprocess tests above.
    for command in ["train", "export", "predict", "bases", "check-data", "clear-cache"]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert f"usage: tftransfer {command}" in out
        if command == "train":
            assert "--unfreeze" in out and "--image-cache" in out


@pytest.fixture
def one_class_folder(tmp_path):
    root = write_image_folder(tmp_path / "one", 2)
    for name in ("green", "blue"):
        for path in (root / name).iterdir():
            path.unlink()
        (root / name).rmdir()
    return root


@pytest.mark.parametrize("args, message", [
    (["--base", "no_such_base"], "unknown base 'no_such_base'"),
    (["--data", "/no/such/folder"], "data folder not found: /no/such/folder"),
    (["one_class"], "has 1 class folder(s) (red); a classifier needs at least 2"),
    (["--unfreeze", "500"], "cannot unfreeze 500 layers: the base"),
    (["--taps", "no_such_layer"], "has no layer named 'no_such_layer' to tap"),
])
def test_bad_arguments_give_a_one_line_error(args, message, one_class_folder,
                                             image_folder_path, tiny_base_file,
                                             tmp_path, capsys):
    args = ["--data", str(one_class_folder)] if args == ["one_class"] else args
    defaults = ["--data", str(image_folder_path), "--base", str(tiny_base_file),
                "--export", str(tmp_path / "out"), "--quiet"]
    assert cli.main(["train", *defaults, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tftransfer: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_train_passes_the_device_options_on(image_folder_path, tiny_base_file, tmp_path,
                                            monkeypatch, caplog):
    import tftransfer
    from tftransfer.training import distribute

    seen = {}
    real_plan, real_precision = tftransfer.plan_fine_tune, distribute.select_precision

    def plan_fine_tune(model, train, validation, **options):
        seen.update(options)
        return real_plan(model, train, validation, **options)

    def select_precision(policy, strategy=None):
        seen["precision"] = policy
        return real_precision("float32", strategy)

    monkeypatch.setattr(tftransfer, "plan_fine_tune", plan_fine_tune)
    monkeypatch.setattr(distribute, "select_precision", select_precision)
    with caplog.at_level("INFO", logger="tftransfer"):
        assert cli.main(["train", "--data", str(image_folder_path), "--base",
                         str(tiny_base_file), "--export", str(tmp_path / "out"), "--quiet",
                         "--head-epochs", "1", "--top-epochs", "1", "--unfreeze", "2",
                         "--head-patience", "3", "--top-patience", "2",
                         "--strategy", "default", "--precision", "mixed_float16",
                         "--jit-compile", "off", "--learning-rate-scaling", "linear",
                         "--backup-dir", str(tmp_path / "backup")]) == 0
    assert seen["precision"] == "mixed_float16"
    assert (seen["head"].patience, seen["top"].patience) == (3, 2)
    assert seen["options"].backup_dir == str(tmp_path / "backup")
    assert seen["options"].jit_compile is False
    assert seen["options"].learning_rate_scaling == "linear"
    out = "\n".join(record.getMessage() for record in caplog.records)
    assert "strategy: one device with 1 replica(s)" in out and "global batch 16" in out
    assert not (tmp_path / "backup").exists()  # Removed once training ended.
    with pytest.raises(SystemExit):  # argparse rejects an unknown strategy.
        cli.main(["train", "--strategy", "gpus"])


def test_train_writes_a_run_record_that_reruns_to_the_same_options(tmp_path, capsys,
                                                                    caplog):
    import csv
    import json

    from tftransfer.training.runs import NOT_REPLAYED

    run_dir = tmp_path / "run"
    options = ["--head-epochs", "2", "--top-epochs", "1", "--unfreeze", "4",
               "--head-learning-rate", "0.002", "--augment", "flip", "--seed", "5",
               "--export", str(tmp_path / "export"), "--quiet"]
    status, out, _ = run_here(capsys, caplog, "train", *options, "--run-dir", run_dir)
    assert status == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["options"]["head_learning_rate"] == 0.002
    assert config["options"]["augment"] == {"flip": "horizontal"}
    assert config["seed"] == 5 and len(config["data_digest"]) == 64
    assert set(config["versions"]) >= {"tensorflow", "keras", "tftransfer", "python"}
    assert config["outputs"]["export"] == str(tmp_path / "export" / "1")
    page = run_dir / "report" / "report.html"
    assert config["outputs"]["report"] == str(page)
    assert out.strip().splitlines()[-1] == f"report: {page}"
    assert json.loads((run_dir / "report" / "report.json").read_text())["num_examples"] > 0
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [r["phase"] for r in rows] == ["head", "head", "top"]
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert float(rows[0]["loss"]) > 0 and "val_accuracy" in rows[0]
    assert any((run_dir / "logs").rglob("events.out.tfevents.*"))
    decisions = json.loads((run_dir / "decisions.json").read_text())
    # --unfreeze 4: nothing waited for the evidence, but the kept weights were chosen.
    assert decisions["evidence"] is None and decisions["plan"]["top"]["unfreeze"] == 4
    assert decisions["decisions"][-1].startswith(f"kept the {decisions['kept_phase']}")

    # The same options again, from the file alone; a flag still overrides.
    parser = cli.build_parser()
    original = vars(parser.parse_args(["train", *options, "--run-dir", str(run_dir)]))
    again = cli._with_config(parser, ["train", "--config", str(run_dir / "config.json")],
                             run_dir / "config.json")
    replayed = {k: v for k, v in vars(again).items()
                if k not in NOT_REPLAYED and k != "replayed_digest"}
    assert replayed == {k: v for k, v in original.items() if k not in NOT_REPLAYED}
    changed = cli._with_config(parser, ["train", "--config", str(run_dir), "--seed", "9"],
                               run_dir)
    assert changed.seed == 9 and changed.head_learning_rate == 0.002
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert cli.main(["train", "--config", str(bad)]) == 2


@pytest.fixture(scope="module")
def trained_export(tiny_base_file, split_folder_path, tmp_path_factory):
    import tftransfer

    base = tftransfer.load_base(str(tiny_base_file), preprocessing="unit")
    data = tftransfer.load_data(str(split_folder_path), base.input_size, batch_size=8)
    model = tftransfer.build_classifier(base, 3, augmentation=None)
    tftransfer.fine_tune(model, data.train, data.validation,
                         head=tftransfer.Phase.head(epochs=2),
                         top=tftransfer.Phase.top(epochs=0), verbose=0)
    return tftransfer.export_saved_model(model, tmp_path_factory.mktemp("export") / "m",
                                         data.class_names)


def test_evaluate_command_writes_the_report(trained_export, split_folder_path, tmp_path,
                                            capsys, caplog):
    output = tmp_path / "report"
    status, out, _ = run_here(capsys, caplog, "evaluate", "--model", trained_export,
                              "--data", split_folder_path, "--output", output)
    assert status == 0
    assert "macro avg" in out and "accuracy" in out
    assert out.strip().splitlines()[-1] == f"report: {output / 'report.html'}"
    assert (output / "report.json").is_file()
    status, _, _ = run_here(capsys, caplog, "evaluate", "--model", tmp_path / "nothing",
                            "--data", split_folder_path)
    assert status == 2
    import json
    import shutil

    broken = tmp_path / "with_a_broken_file"
    shutil.copytree(split_folder_path, broken)
    (broken / "test" / "red" / "broken.png").write_bytes(b"not a png")
    status, out, _ = run_here(capsys, caplog, "evaluate", "--model", trained_export,
                              "--data", broken, "--output", tmp_path / "r2")
    assert status == 3 and "1 file(s) could not be used and were not scored" in out
    skipped = json.loads((tmp_path / "r2" / "report.json").read_text())["skipped"]
    assert list(skipped) == [str(broken / "test" / "red" / "broken.png")]


@pytest.mark.slow
def test_compare_on_the_demo_prints_three_rows(tmp_path, capsys, caplog):
    status, out, _ = run_here(capsys, caplog, "compare", "--scratch-epochs", "1",
                              "--output", tmp_path / "compare")
    assert status == 0
    lines = out.strip().splitlines()
    header = lines.index(next(line for line in lines if line.startswith("method")))
    rows = lines[header + 1:header + 4]
    assert [row.split()[0] for row in rows] == ["scratch", "features", "fine_tune"]
    assert all(0.0 <= float(row.split()[1]) <= 1.0 for row in rows)
    assert lines[-1] == f"report: {tmp_path / 'compare' / 'compare.html'}"


def test_lr_find_prints_the_rate_and_saves_the_plot(tiny_base_file, split_folder_path,
                                                    tmp_path, capsys, caplog):
    plot = tmp_path / "lr.png"
    status, out, _ = run_here(capsys, caplog, "lr-find", "--data", split_folder_path,
                              "--base", tiny_base_file, "--batch-size", "8",
                              "--feature-cache", tmp_path / "cache", "--plot", plot)
    assert status == 0
    line = next(line for line in out.splitlines() if line.startswith("learning rate:"))
    assert 1e-7 < float(line.split()[2]) < 1.0
    assert plot.stat().st_size > 1000
    # --feature-cache none: the features go to a folder that goes with the test.
    status, out, log = run_here(capsys, caplog, "lr-find", "--data", split_folder_path,
                                "--base", tiny_base_file, "--batch-size", "8",
                                "--feature-cache", "none", "--plot", tmp_path / "lr2.png")
    assert status == 0 and "learning rate:" in out
    extracted = next(line for line in log.splitlines() if "extracting features to" in line)
    assert not Path(extracted.split("extracting features to ")[1]).exists()


@pytest.mark.parametrize("option, value", [("--head-learning-rate", "fast"),
                                           ("--head-learning-rate", "-1"),
                                           ("--augmented-views", "many"),
                                           ("--augment", "sparkle")])
def test_bad_auto_options_are_rejected_by_name(option, value, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", option, value])
    assert option in capsys.readouterr().err


def test_train_says_when_its_report_is_on_validation_images_that_the_refit_trained_on(
        tiny_base_file, image_folder_path, tmp_path, capsys, caplog):
    args = ["train", "--data", image_folder_path, "--base", tiny_base_file, "--export",
            tmp_path / "export", "--head-epochs", "2", "--top-epochs", "0",
            "--quiet", "--run-dir", tmp_path / "run"]
    status, out, log = run_here(capsys, caplog, *args)  # No test/ folder: 8 per class.
    assert status == 0
    assert "refit: the head again" in log
    assert "validation: " in out and "refit on the validation split too" in out
    status, out, log = run_here(capsys, caplog, *args, "--refit", "off", "--run-dir",
                                tmp_path / "run2")
    assert status == 0
    assert "refit" not in log and "refit on the validation" not in out



def test_dry_run_prints_the_demo_plan_and_trains_nothing(tmp_path, capsys, caplog,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    monkeypatch.setenv("TFTRANSFER_RUNS_DIR", str(runs))
    status, out, _ = run_here(capsys, caplog, "train", "--dry-run")
    assert status == 0
    assert "data: 100 training images, per class [20, 20, 20, 20, 20]; 50 validation" in out
    assert "head: the head alone, up to 50 epoch(s) at 0.001, patience 5; cached" in out
    # 20 per class: no top phase, no views (from 12 per class), and the head
    # refit on the validation images too.
    assert "top: skipped" in out
    assert "augmented views: none (images as they are); refit: yes" in out
    # From 15 per class (so, the demo), the top phase waits for the evidence.
    monkeypatch.setattr("tftransfer.training.auto.AUTO_UNFREEZE",
                        ((15, 0.0), (100, 0.25), (500, 0.5), (float("inf"), 1.0)))
    status, out, _ = run_here(capsys, caplog, "train", "--dry-run")
    assert "top: the top 14 backbone layer(s) and the head, up to 20 epoch(s)" in out
    assert "cached (2 tensor(s) cross the cut)" in out  # mobilenet_v2's block 14 tap too.
    assert "augmented views: none (images as they are); refit: no" in out
    assert "keep: the average of the head and top phases' weights (WiSE-FT), unless" in out
    assert "one-sided sign test (McNemar's, exact) at p < 0.1" in out
    # Whether the top phase runs waits for the evidence of the extracted features.
    assert "waits for the extraction: whether the top phase runs" in out
    assert "if it does not, the head is refit" in out  # 20 per class: refit "auto".
    assert not (tmp_path / "saved_models").exists() and not runs.exists()


def test_dry_run_of_a_hub_module_says_why_the_top_phase_is_uncached(
        hub_bn_module, image_folder_path, tmp_path, capsys, caplog):
    status, out, _ = run_here(capsys, caplog, "train", "--dry-run", "--data",
                              image_folder_path, "--base", hub_bn_module, "--unfreeze", "all",
                              "--feature-cache", tmp_path)
    assert status == 0
    assert "top: the top 2 variable(s) of the TF Hub module and the head" in out
    assert "uncached (a TF Hub module runs only as a whole" in out
    assert f"feature cache: {tmp_path}" in out


def test_a_config_replays_training_settings_only_and_checks_each_value(tmp_path, capsys):
    import json

    parser = cli.build_parser()
    config = tmp_path / "config.json"
    written = {"head_epochs": 3, "refit": "off", "export": "/srv/models/served",
               "overwrite": True, "model_version": 1, "backup_dir": "/home/me",
               "base": "https://example.invalid/module", "weights": "evil.h5",
               "feature_cache": "/etc", "save_keras": "/tmp/x.keras", "log_dir": "/tmp/l"}
    config.write_text(json.dumps({"options": written, "data_digest": "0" * 64}))
    args = cli._with_config(parser, ["train", "--config", str(config)], config)
    defaults = parser.parse_args(["train"])
    assert args.head_epochs == 3 and args.refit == "off"
    for name in ("export", "overwrite", "model_version", "backup_dir", "base", "weights",
                 "feature_cache", "save_keras", "log_dir"):
        assert getattr(args, name) == getattr(defaults, name), name
    assert "was trained with --base https://example.invalid/module" in capsys.readouterr().out
    for bad in ({"refit": "maybe"}, {"head_epochs": "many"}, {"quiet": "yes"},
                {"augment": {"spin": 3}}, {"head_learning_rate": -1}):
        config.write_text(json.dumps({"options": bad}))
        parser = cli.build_parser()
        with pytest.raises(cli.TransferError, match="is not valid"):
            cli._with_config(parser, ["train", "--config", str(config)], config)


def test_a_config_is_replayed_unchecked_where_argparse_hides_its_actions(tmp_path):
    import json

    class WithoutActions:  # An argparse without the private `_actions`.
        def __init__(self, parser):
            self.parser = parser

        def __getattr__(self, name):
            if name == "_actions":
                raise AttributeError(name)
            return getattr(self.parser, name)

    parser = cli.build_parser()
    parser.train_parser = WithoutActions(parser.train_parser)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"options": {"head_epochs": 3}}))
    assert cli._with_config(parser, ["train", "--config", str(config)], config).head_epochs == 3
    config.write_text(json.dumps({"options": {"no_such_option": 1}}))
    with pytest.raises(cli.TransferError, match="does not know: no_such_option"):
        cli._with_config(parser, ["train", "--config", str(config)], config)


def test_a_replayed_run_on_changed_data_says_so(tmp_path, capsys, caplog, tiny_base_file):
    from conftest import write_image_folder

    data = write_image_folder(tmp_path / "data", 4)
    options = ["--data", data, "--base", tiny_base_file, "--head-epochs", "1",
               "--top-epochs", "0", "--export", tmp_path / "export", "--quiet"]
    assert run_here(capsys, caplog, "train", *options, "--run-dir", tmp_path / "one")[0] == 0
    write_image_folder(data, 4, seed=5)  # Other pixels under the same names.
    status, out, _ = run_here(capsys, caplog, "train", "--config", tmp_path / "one",
                              "--data", data, "--base", tiny_base_file,
                              "--export", tmp_path / "export", "--run-dir", tmp_path / "two")
    assert status == 0 and "note: the data differ from those of --config" in out


def test_export_matches_the_data_to_the_names_saved_beside_the_model(tiny_base_file, tmp_path,
                                                                     capsys):
    import shutil

    import tftransfer
    from conftest import write_image_folder

    base = tftransfer.load_base(str(tiny_base_file), preprocessing="unit")
    model = tftransfer.build_classifier(base, 3, augmentation=None)
    model.save(tmp_path / "m.keras")
    # The model's output order, as `train --save-keras` writes it beside the file.
    (tmp_path / "m.labels.txt").write_text("red\ngreen\nblue\n")
    data = write_image_folder(tmp_path / "data", 2)
    assert cli.main(["export", "--model", str(tmp_path / "m.keras"), "--export",
                     str(tmp_path / "out"), "--data", str(data)]) == 0
    exported = (tmp_path / "out" / "1" / "assets" / "labels.txt").read_text()
    assert exported == "red\ngreen\nblue\n"  # Not the folder's sorted blue, green, red.
    shutil.copytree(data / "red", data / "zebra")
    assert cli.main(["export", "--model", str(tmp_path / "m.keras"), "--export",
                     str(tmp_path / "out"), "--data", str(data)]) == 2
    assert "does not know: zebra" in capsys.readouterr().err


def test_train_reads_each_split_once_for_its_identity(split_folder_path, tiny_base_file,
                                                       tmp_path, capsys, caplog, monkeypatch):
    from tftransfer.training import plan as plan_module
    from tftransfer.data import identity

    read, real = [], identity.identify

    def counted(dataset, *args, **kwargs):
        read.append(id(dataset))
        return real(dataset, *args, **kwargs)

    monkeypatch.setattr(identity, "identify", counted)  # The digest's (runs.py).
    monkeypatch.setattr(plan_module, "identify", counted)  # The plan's.
    status, _, _ = run_here(capsys, caplog, "train", "--data", split_folder_path, "--base",
                            tiny_base_file, "--head-epochs", "1", "--top-epochs", "0",
                            "--export", tmp_path / "export", "--quiet",
                            "--run-dir", tmp_path / "run")
    assert status == 0
    assert len(read) == 3 == len(set(read))  # train, validation, test: once each.


def test_multi_label_train_evaluate_predict_from_the_cli(tmp_path, capsys, caplog,
                                                         tiny_base_file):
    from conftest import write_multi_label_csv

    train_csv, _ = write_multi_label_csv(tmp_path / "train", count=48)
    test_csv, _ = write_multi_label_csv(tmp_path / "test", count=12, seed=4)
    export = tmp_path / "export"
    status, out, log = run_here(
        capsys, caplog, "train", "--data", train_csv, "--base", tiny_base_file,
        "--export", export, "--head-epochs", "3", "--top-epochs", "1", "--unfreeze", "2",
        "--quiet", "--save-keras", tmp_path / "m.keras", "--run-dir", tmp_path / "run")
    assert status == 0
    assert "3 labels (multi-label)" in out and "validation: mAP" in out
    assert "per-label thresholds" in log
    assert "the validation split chose the per-label thresholds" in out
    report = (tmp_path / "run" / "report" / "report.json").read_text()
    assert '"mean_average_precision"' in report and '"per_label"' in report
    status, out, _ = run_here(capsys, caplog, "evaluate", "--model", tmp_path / "m.keras",
                              "--data", test_csv, "--output", tmp_path / "eval")
    assert status == 0 and "on 12 examples" in out and out.startswith("label")
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["blue", "green", "red"]
    status, out, _ = run_here(capsys, caplog, "predict", "--model", export,
                              tmp_path / "test" / "images", "--predictions", tmp_path / "p.csv")
    assert status == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "path,labels,scores,error" and len(rows) == 13
