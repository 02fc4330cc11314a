import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tftransfer
from tftransfer.data import decode_image
from tftransfer.export import latest_version, next_version


@pytest.fixture
def trained(tiny_base, image_folder_path):
    data = tftransfer.image_folder(image_folder_path, tiny_base.input_size, batch_size=8)
    model = tftransfer.build_classifier(tiny_base, 3)
    tftransfer.fine_tune(model, data.train, data.validation, head_epochs=2,
                         fine_tune_epochs=1, unfreeze=3, verbose=0)
    return model, data.class_names


def encoded(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def test_export_reloaded_in_a_new_process_matches_keras(trained, tmp_path):
    model, class_names = trained
    path = tftransfer.export_saved_model(model, tmp_path / "colors", class_names)
    assert path == tmp_path / "colors" / "1"
    rng = np.random.default_rng(0)
    raw = [rng.integers(0, 255, (h, w, 3)).astype("uint8") for h, w in [(32, 32), (50, 70), (17, 23)]]
    blobs = [encoded(raw[0], "PNG"), encoded(raw[1], "JPEG"), encoded(raw[2], "PNG")]
    pixels = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "pixels.npy", pixels)
    (tmp_path / "blobs.json").write_text(json.dumps([b.hex() for b in blobs]))
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({str(path)!r})
        pixels = np.load({str(tmp_path / "pixels.npy")!r})
        blobs = [bytes.fromhex(b) for b in json.load(open({str(tmp_path / "blobs.json")!r}))]
        a = loaded.signatures["serving_images"](images=tf.constant(pixels))
        b = loaded.signatures["serving_default"](image_bytes=tf.constant(blobs))
        np.save({str(tmp_path / "a.npy")!r}, a["probabilities"].numpy())
        np.save({str(tmp_path / "b.npy")!r}, b["probabilities"].numpy())
        print(json.dumps([[c.decode() for c in row] for row in b["classes"].numpy()]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"),
                               model.predict(pixels, verbose=0), atol=1e-5)
    decoded = np.stack([decode_image(tf.constant(b), (32, 32)).numpy() for b in blobs])
    expected = model.predict(decoded, verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), expected, atol=1e-5)
    top_classes = json.loads(out.stdout.strip().splitlines()[-1])
    assert [row[0] for row in top_classes] == [class_names[i] for i in expected.argmax(1)]


def test_versions_labels_and_metadata(trained, tmp_path):
    model, class_names = trained
    base_path = tmp_path / "model"
    first = tftransfer.export_saved_model(model, base_path, class_names, metadata={"base": "tiny"})
    second = tftransfer.export_saved_model(model, base_path, class_names)
    assert (first.name, second.name) == ("1", "2")
    assert next_version(base_path) == 3 and latest_version(base_path) == second
    assert (first / "assets" / "labels.txt").read_text().split() == class_names
    metadata = json.loads((first / "assets.extra" / "metadata.json").read_text())
    assert metadata["class_names"] == class_names and metadata["input_size"] == [32, 32]
    assert metadata["base"] == "tiny"
    assert sorted(p.name for p in base_path.iterdir()) == ["1", "2"]  # no leftovers
    with pytest.raises(tftransfer.TransferError, match="2 already exists"):
        tftransfer.export_saved_model(model, base_path, class_names, version=2)
    tftransfer.export_saved_model(model, base_path, class_names, version=2, overwrite=True)
    assert sorted(p.name for p in base_path.iterdir()) == ["1", "2"]


def test_class_names_must_match_outputs(trained, tmp_path):
    model, _ = trained
    with pytest.raises(tftransfer.TransferError, match="2 class names for a model with 3"):
        tftransfer.export_saved_model(model, tmp_path, ["a", "b"])


def test_predict_files_ranks_classes(trained, tmp_path, image_folder_path):
    model, class_names = trained
    tftransfer.export_saved_model(model, tmp_path / "m", class_names)
    images = sorted((image_folder_path / "red").glob("*.png"))[:2]
    results = tftransfer.predict_files(tmp_path / "m", images, top_k=2)
    pixels = np.stack([decode_image(tf.io.read_file(str(p)), (32, 32)).numpy() for p in images])
    expected = model.predict(pixels, verbose=0)
    for (path, ranked), row in zip(results, expected):
        assert [name for name, _ in ranked] == [class_names[i] for i in row.argsort()[::-1][:2]]
        assert ranked[0][1] == pytest.approx(row.max(), abs=1e-5)
    with pytest.raises(tftransfer.TransferError, match="image not found: nope.png"):
        tftransfer.predict_files(tmp_path / "m", ["nope.png"])
