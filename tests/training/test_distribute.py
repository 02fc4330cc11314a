import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from tftransfer.errors import TransferError
from tftransfer.models.losses import SparseCategoricalCrossentropy
from tftransfer.training import distribute

from conftest import write_image_folder

HERE = Path(__file__).resolve().parent

# Configures two logical CPUs (which must precede TensorFlow's start), then
# runs the CLI; so MirroredStrategy has two replicas on a CPU-only machine.
TWO_CPUS_CLI = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tftransfer.cli import main
sys.exit(main(sys.argv[1:]))
"""


# --- choosing the strategy and the precision -------------------------------

def test_auto_on_a_cpu_is_the_default_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    strategy = distribute.select_strategy("auto")
    assert strategy is tf.distribute.get_strategy()
    assert distribute.describe(strategy) == "one device"
    assert distribute.is_chief(strategy) and not distribute.is_multi_worker(strategy)


def test_strategy_errors_name_the_problem(monkeypatch):
    with pytest.raises(TransferError, match="unknown strategy 'gpus'"):
        distribute.select_strategy("gpus")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(TransferError, match="needs TF_CONFIG"):
        distribute.select_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(TransferError, match="TF_CONFIG is not valid JSON"):
        distribute.select_strategy("auto")


def test_tf_config_with_several_workers_selects_multi_worker(monkeypatch):
    calls = []
    monkeypatch.setitem(distribute._BUILDERS, "multi_worker",
                        lambda: calls.append("mw") or tf.distribute.get_strategy())
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
         "task": {"type": "worker", "index": 0}}))
    distribute.select_strategy("auto")
    assert calls == ["mw"]
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}))
    distribute.select_strategy("auto")
    assert calls == ["mw"]  # One worker is not a cluster.


@pytest.mark.parametrize("capabilities, expected", [
    ([(8, 0)], "mixed_float16"),
    ([(7, 0), (9, 0)], "mixed_float16"),
    ([(8, 0), (6, 1)], "float32"),  # One old GPU is enough to keep float32.
    ([], "float32"),
])
def test_auto_precision_follows_the_gpus(capabilities, expected):
    assert distribute.auto_precision(gpu_capabilities=capabilities) == expected


def test_mixed_precision_classifier_keeps_float32_probabilities(tiny_base_file,
                                                                hub_bn_module):
    try:
        assert distribute.select_precision("mixed_float16") == "mixed_float16"
        for base in (tftransfer.load_base(str(tiny_base_file), preprocessing="unit"),
                     tftransfer.load_base(str(hub_bn_module))):
            model = tftransfer.build_classifier(base, 3, augmentation=None)
            assert model.get_layer("head").layers[-1].compute_dtype == "float32"
            model.compile(keras.optimizers.Adam(1e-3), SparseCategoricalCrossentropy())
            assert type(model.optimizer).__name__ == "LossScaleOptimizer"
            images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3))
            model.fit(images.astype("float32"), np.array([0, 1, 2, 0]), verbose=0)
            assert model.predict(images, verbose=0).dtype == np.float32
    finally:
        distribute.select_precision("float32")
    assert keras.config.dtype_policy().name == "float32"


def test_learning_rate_scale_and_global_batch():
    assert distribute.learning_rate_scale(1, "linear") == 1.0
    assert distribute.learning_rate_scale(4, "sqrt") == 2.0
    assert distribute.learning_rate_scale(4, "linear") == 4.0
    assert distribute.learning_rate_scale(4, None) == 1.0
    with pytest.raises(TransferError, match="learning_rate_scaling"):
        distribute.learning_rate_scale(4, "cubic")
    assert distribute.global_batch_size(16) == 16


# --- several replicas and several workers, in subprocesses --------------------

def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(commands, log_dir):
    """Starts one process per command with a TF_CONFIG for a local cluster."""
    ports = _free_ports(len(commands))
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index, command in enumerate(commands):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        log = open(log_dir / f"worker-{index}.log", "a")
        processes.append(subprocess.Popen([sys.executable, *command], env=env,
                                          stdout=log, stderr=subprocess.STDOUT))
    return processes


def _wait(processes, timeout):
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            process.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [process.returncode for process in processes]


def _run_two_cpus(*args):
    result = subprocess.run([sys.executable, "-c", TWO_CPUS_CLI, *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def colors_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("distribute") / "colors"
    write_image_folder(root / "train", 16, seed=1)
    write_image_folder(root / "val", 6, seed=2)
    write_image_folder(root / "test", 40, seed=3)
    return root


def _test_accuracy(stdout):
    line = next(line for line in stdout.splitlines() if line.startswith("test accuracy:"))
    return float(line.split()[2])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mirrored_over_two_cpus_matches_one_device(tiny_base_file, colors_split, tmp_path):
    common = ["train", "--data", str(colors_split), "--base", str(tiny_base_file),
              "--head-epochs", "40", "--top-epochs", "2", "--unfreeze", "3",
              "--head-learning-rate", "1e-2", "--learning-rate-scaling", "none", "--quiet",
              "--feature-cache", str(tmp_path / "cache")]
    # The same global batch (2 x 8 = 16), so both take the same steps.
    mirrored = _run_two_cpus(*common, "--strategy", "mirrored", "--batch-size", "8",
                             "--export", str(tmp_path / "mirrored"))
    single = _run_two_cpus(*common, "--strategy", "default", "--batch-size", "16",
                           "--export", str(tmp_path / "single"))
    assert "strategy: MirroredStrategy with 2 replica(s)" in mirrored
    assert "strategy: one device with 1 replica(s)" in single
    assert "global batch 16" in mirrored and "global batch 16" in single
    for output in (mirrored, single):
        epochs = re.findall(r"^(?:head|top) epoch (\d+)/(\d+) - ", output,
                            re.MULTILINE)
        head = [e for e in epochs if e[1] == "40"]
        top = [e for e in epochs if e[1] != "40"]
        assert head and head[0] == ("1", "40")
        # The top phase goes on from where early stopping ended the head phase.
        assert top == [(str(len(head) + 1), str(len(head) + 2)),
                             (str(len(head) + 2), str(len(head) + 2))]
    # Trained until early stopping, so that the comparison is of converged
    # models, not of two shuffle orders part-way.
    accuracies = _test_accuracy(mirrored), _test_accuracy(single)
    print("test accuracy, mirrored and one device:", accuracies)
    assert abs(accuracies[0] - accuracies[1]) <= 0.02, accuracies
    assert min(accuracies) > 0.5, accuracies  # Better than chance (1/3): it learned.


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_multi_label_trains_under_mirrored_over_two_cpus(tiny_base_file, tmp_path):
    from conftest import write_multi_label_csv

    labels, _ = write_multi_label_csv(tmp_path / "tags", count=32)
    output = _run_two_cpus("train", "--data", str(labels), "--base", str(tiny_base_file),
                           "--head-epochs", "2", "--top-epochs", "1", "--unfreeze", "3",
                           "--quiet", "--strategy", "mirrored", "--batch-size", "8",
                           "--feature-cache", str(tmp_path / "cache"),
                           "--export", str(tmp_path / "export"),
                           "--run-dir", str(tmp_path / "run"))
    assert "strategy: MirroredStrategy with 2 replica(s)" in output
    assert "3 labels (multi-label)" in output and "validation: mAP" in output
    assert re.search(r"^top epoch \d+/\d+ - .*val_average_precision", output, re.MULTILINE)
    assert "per-label thresholds" in output


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_workers_train_both_phases_to_identical_weights(tmp_path):
    save = tmp_path / "model.keras"
    command = ["-m", "tftransfer.cli", "train", "--strategy", "multi_worker",
               "--head-epochs", "3", "--top-epochs", "2", "--unfreeze", "14", "--quiet",
               "--export", str(tmp_path / "export"), "--save-keras", str(save),
               "--feature-cache", str(tmp_path / "cache")]
    codes = _wait(_start_workers([command, command], tmp_path), timeout=360)
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    for log in logs:
        assert "MultiWorkerMirroredStrategy with 2 replica(s)" in log
        assert "global batch 32" in log
        assert "top epoch 5/5" in log and "test accuracy:" in log
    assert "export: left to the chief" in logs[1]
    assert (tmp_path / "export" / "1" / "saved_model.pb").is_file()
    chief = tftransfer.load_model(save)
    worker = tftransfer.load_model(tmp_path / "model.worker-1.keras")
    for a, b in zip(chief.get_weights(), worker.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_killed_worker_resumes_from_the_backup(tmp_path):
    backup = tmp_path / "backup"
    script = [str(HERE / "distributed_worker.py"), str(tmp_path), str(backup)]
    chief, worker = _start_workers([script, [*script, "--die-at-epoch", "5"]], tmp_path)
    # Worker 1 vanishes as epoch 5 (the second of phase 2) begins; the chief
    # then waits for it forever, as a real cluster would, and is killed too.
    assert _wait([worker], timeout=300) == [-signal.SIGKILL]
    index = backup / "top" / "latest.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
            index.is_file() and json.loads(index.read_text())["epoch"] == 5):
        time.sleep(0.2)
    chief.kill()
    chief.wait()
    assert json.loads(index.read_text())["epoch"] == 5
    assert (backup / "head.json").is_file()

    codes = _wait(_start_workers([script, script], tmp_path), timeout=300)
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    for i, log in enumerate(logs):
        restart = log[log.rindex("strategy: MultiWorkerMirroredStrategy"):]
        assert "the head phase finished earlier after 3 epochs" in restart
        assert "resuming the top phase after epoch 5" in restart
        epochs = json.loads((tmp_path / f"worker-{i}.json").read_text())
        assert epochs == {"head": [0, 1, 2], "top": [5, 6]}
    with np.load(tmp_path / "worker-0.npz") as a, np.load(tmp_path / "worker-1.npz") as b:
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    assert not backup.exists()
