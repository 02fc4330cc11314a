"""A regular (non-editable) install carries what `tftransfer train` needs."""

import os
import re
import site as sitelib
import subprocess
import sys
from pathlib import Path

import pytest

import tftransfer
from tftransfer import cli

ROOT = Path(__file__).resolve().parent.parent
EPOCH_LINE = re.compile(r"^(head|top) epoch \d+/\d+ - ")


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.slow
def test_wheel_installs_and_trains_offline_from_an_empty_folder(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(ROOT)], check=True, capture_output=True)
    wheel = next(wheels.glob("tftransfer-*.whl"))
    venv = tmp_path / "venv"
    # The venv sees TensorFlow in the system's site-packages: nothing to download.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True)
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    if sys.prefix != sys.base_prefix:
        # Run from a virtual environment, --system-site-packages reaches the base
        # interpreter's packages, not this environment's, which hold TensorFlow.
        (site / "outer_environment.pth").write_text(
            "".join(f"{path}\n" for path in sitelib.getsitepackages()))
    installed = site / "tftransfer"
    assert (installed / "saved_models" / "fashion_mobilenet_v2.weights.h5").is_file()
    assert (installed / "saved_models" / "fashion_mobilenet_v2_hub" / "saved_model.pb").is_file()
    before = _snapshot(site)

    workdir = tmp_path / "empty"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",
                                                            "TFTRANSFER_SAVED_MODELS")}
    env["TFTRANSFER_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run(
        [str(venv / "bin" / "tftransfer"), "train", "--head-epochs", "2",
         "--top-epochs", "1"], cwd=workdir, env=env, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    export = workdir / "saved_models" / "demo_classifier" / "1"
    assert f"exported to {export}" in result.stdout
    assert (export / "saved_model.pb").is_file()
    assert (export / "assets" / "labels.txt").read_text().split() == [
        "ankle_boot", "bag", "sandal", "shirt", "sneaker"]
    assert _snapshot(site) == before, "the run wrote inside site-packages"

    version = subprocess.run([str(venv / "bin" / "tftransfer"), "--version"], cwd=workdir,
                             env=env, capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"tftransfer {tftransfer.__version__}"
    where = subprocess.run([str(python), "-c", "import tftransfer; print(tftransfer.__file__)"],
                           cwd=workdir, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site)


def _train_demo(capsys, tmp_path, *extra):
    # The demo's 20 images per class take no top phase by default: ask for one.
    status = cli.main(["train", "--head-epochs", "3", "--top-epochs", "2", "--unfreeze", "14",
                       "--export", str(tmp_path / "export"), *extra])
    out = capsys.readouterr().out
    assert status == 0
    return out


def test_piped_train_logs_one_line_per_epoch_and_each_fact_once(capsys, caplog, tmp_path):
    import logging

    with caplog.at_level(logging.INFO, logger="tftransfer"):
        out = _train_demo(capsys, tmp_path)
    assert "\x1b" not in out and "\r" not in out and "━" not in out
    lines = out.splitlines()
    epochs = [line for line in lines if EPOCH_LINE.match(line)]
    assert [line.split(" - ")[0] for line in epochs] == [
        "head epoch 1/3", "head epoch 2/3", "head epoch 3/3",
        "top epoch 4/5", "top epoch 5/5"]
    assert all("val_accuracy: " in line for line in epochs)
    assert not [line for line in lines if line.startswith("Epoch ")]
    text = out + "\n".join(record.getMessage() for record in caplog.records)
    for fact in ("in sync", "precision", "global batch"):
        assert text.count(fact) == 1, fact


def test_quiet_is_one_line_per_epoch_even_in_a_terminal(capsys, monkeypatch, tmp_path,
                                                        tiny_base_file, image_folder_path):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    status = cli.main(["train", "--data", str(image_folder_path), "--base",
                       str(tiny_base_file), "--head-epochs", "2", "--top-epochs", "1",
                       "--unfreeze", "2", "--export", str(tmp_path / "export"), "--quiet"])
    out = capsys.readouterr().out
    assert status == 0
    assert "\x1b" not in out and "━" not in out
    assert len([line for line in out.splitlines() if EPOCH_LINE.match(line)]) == 3
    assert "exported to" in out


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"tftransfer {tftransfer.__version__}"


def test_export_version_has_its_own_name(tmp_path):
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--model-version", "7"])
    assert args.model_version == 7
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--version", "7"])


def test_default_export_is_under_the_current_folder():
    args = cli.build_parser().parse_args(["train"])
    assert not Path(args.export).is_absolute()
    assert Path(args.export) == Path("saved_models") / "demo_classifier"


def test_the_lowest_versions_step_installs_every_floor_of_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later.

    root = Path(__file__).resolve().parent.parent
    declared = {}
    for requirement in tomllib.loads((root / "pyproject.toml").read_text())["project"][
            "dependencies"]:
        name, _, floor = requirement.partition(">=")
        if floor:
            declared[name.strip()] = floor.strip()
    pinned = dict(re.findall(r'^\s+"([\w-]+)==([\d.]+)"$',
                             (root / ".ci" / "lowest").read_text(), re.M))
    assert set(pinned) == set(declared)
    # The floor's first release: TensorFlow has no 2.16.0, so 2.16 is 2.16.1.
    assert all(pinned[name].startswith(floor) for name, floor in declared.items()), pinned
