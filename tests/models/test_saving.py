import json
import socket
import threading
import zipfile

import numpy as np
import pytest

import tftransfer
from tftransfer.errors import TransferError
from tftransfer.models import hub
from tftransfer.models.saving import load_model


@pytest.fixture
def hub_classifier_file(hub_bn_module, tmp_path):
    base = tftransfer.load_base(str(hub_bn_module))
    model = tftransfer.build_classifier(base, 3, augmentation=None)
    path = tmp_path / "hub_classifier.keras"
    model.save(path)
    return model, path


def with_handle(path, handle, out):
    """A copy of a .keras file whose hub module names another handle."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                text = data.decode()
                config = json.loads(text)
                old = next(v for v in _values(config, "handle"))
                data = text.replace(json.dumps(old)[1:-1], handle).encode()
            target.writestr(item, data)
    return out


def _values(config, key):
    if isinstance(config, dict):
        for k, v in config.items():
            if k == key:
                yield v
            yield from _values(v, key)
    elif isinstance(config, list):
        for v in config:
            yield from _values(v, key)


class Listener:
    """A local TCP listener that counts the connections made to it."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while self.running:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self):
        self.running = False
        self.thread.join()
        self.socket.close()


def test_a_keras_file_naming_a_remote_module_is_refused_with_no_connection(
        hub_classifier_file, tmp_path, monkeypatch):
    _, path = hub_classifier_file
    loads = []
    monkeypatch.setattr(hub, "_load_module", lambda *a: loads.append(a))
    listener = Listener()
    try:
        url = f"http://127.0.0.1:{listener.port}/evil/module"
        crafted = with_handle(path, url, tmp_path / "crafted.keras")
        with pytest.raises(TransferError) as error:
            load_model(crafted)
        assert url in str(error.value) and "--trust-model" in str(error.value)
        with pytest.raises(TransferError, match="safe_mode=False"):
            tftransfer.evaluate(str(crafted), tmp_path)
    finally:
        listener.close()
    assert listener.connections == 0 and loads == []


def test_a_local_module_in_a_keras_file_is_not_loaded_in_safe_mode(hub_classifier_file,
                                                                    monkeypatch):
    _, path = hub_classifier_file
    loads = []
    monkeypatch.setattr(hub, "_load_module", lambda *a: loads.append(a))
    with pytest.raises(TransferError, match="names the TF Hub module"):
        load_model(path)
    assert loads == []  # Refused before any SavedModel graph was loaded.


def test_a_trusted_hub_classifier_round_trips(hub_classifier_file):
    model, path = hub_classifier_file
    loaded = load_model(path, safe_mode=False)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-6)


def test_legacy_hdf5_model_files_are_refused_in_safe_mode(tmp_path):
    legacy = tmp_path / "model.h5"
    legacy.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(TransferError, match="CVE-2025-9905"):
        load_model(legacy)
    with pytest.raises(TransferError, match="not found"):
        load_model(tmp_path / "missing.keras")


def test_the_cli_refuses_an_untrusted_hub_classifier_and_trusts_it_when_told(
        hub_classifier_file, image_folder_path, tmp_path, capsys):
    from tftransfer import cli

    _, path = hub_classifier_file
    assert cli.main(["evaluate", "--model", str(path), "--data", str(image_folder_path),
                     "--output", str(tmp_path / "report")]) == 2
    assert "--trust-model" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", str(path), "--data", str(image_folder_path),
                     "--output", str(tmp_path / "report"), "--trust-model"]) == 0
