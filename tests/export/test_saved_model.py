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
from tftransfer.export.model_versions import latest_version, next_version


@pytest.fixture(scope="module")
def trained(tiny_base_file, image_folder_path):
    """A classifier trained briefly; shared by the tests, which only read it."""
    tiny_base = tftransfer.load_base(str(tiny_base_file), preprocessing="unit")
    data = tftransfer.image_folder(image_folder_path, tiny_base.input_size, batch_size=8)
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    tftransfer.fine_tune(
        model, data.train, data.validation, head=tftransfer.Phase.head(epochs=2),
        top=tftransfer.Phase.top(epochs=1, unfreeze=3), verbose=0)
    return model, data.class_names


def encoded(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.slow
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
    assert tftransfer.predict_files(tmp_path / "m", ["nope.png"]).skipped == {
        "nope.png": "not found"}


def saved_model_cli(*args):
    return subprocess.run(["saved_model_cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, class_names = trained
    return model, class_names, tftransfer.export_saved_model(
        model, tmp_path_factory.mktemp("exported") / "m", class_names)


@pytest.mark.slow
def test_saved_model_cli_lists_the_signatures(exported):
    _, _, path = exported
    result = saved_model_cli("show", "--dir", path, "--tag_set", "serve")
    assert result.returncode == 0, result.stderr
    for name in ["serving_default", "serving_images", "serving_images_uint8"]:
        assert name in result.stdout
    detail = saved_model_cli("show", "--dir", path, "--tag_set", "serve",
                             "--signature_def", "serving_default")
    assert "image_bytes" in detail.stdout and "DT_STRING" in detail.stdout
    for output in ["probabilities", "scores", "classes", "class_names"]:
        assert f"outputs['{output}']" in detail.stdout


@pytest.mark.slow
def test_saved_model_cli_run_matches_keras_on_jpeg_and_png_bytes(exported, tmp_path):
    model, _, path = exported
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
              for h, w in [(50, 70), (32, 32), (120, 90)]]
    blobs = [encoded(images[0], "JPEG"), encoded(images[1], "PNG"),
             encoded(images[2], "JPEG")]
    # A fixed-width bytes array (no pickle); JPEG and PNG never end in NUL.
    np.save(tmp_path / "bytes.npy", np.array(blobs))
    result = saved_model_cli("run", "--dir", path, "--tag_set", "serve",
                             "--signature_def", "serving_default", "--inputs",
                             f"image_bytes={tmp_path / 'bytes.npy'}", "--outdir",
                             tmp_path / "out", "--overwrite")
    assert result.returncode == 0, result.stderr
    served = np.load(tmp_path / "out" / "probabilities.npy")
    pixels = np.stack([decode_image(tf.constant(b), (32, 32)).numpy() for b in blobs])
    expected = model.predict(pixels, verbose=0)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert served.argmax(1).tolist() == expected.argmax(1).tolist()


def test_uint8_signature_agrees_with_float(exported):
    _, _, path = exported
    loaded = tf.saved_model.load(str(path))
    pixels = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    as_uint8 = loaded.signatures["serving_images_uint8"](images=tf.constant(pixels))
    as_float = loaded.signatures["serving_images"](images=tf.constant(pixels, tf.float32))
    np.testing.assert_allclose(as_uint8["probabilities"], as_float["probabilities"],
                               atol=1e-6)


def test_warmup_requests_parse_as_prediction_logs(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, _, path = exported
    records = list(tf.data.TFRecordDataset(
        str(path / "assets.extra" / "tf_serving_warmup_requests")).as_numpy_iterator())
    assert len(records) == 2
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    request = log.predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    blobs = tf.make_ndarray(request.inputs["image_bytes"])
    assert len(blobs) == 2 and tf.io.is_jpeg(blobs[0])
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert serve(image_bytes=tf.constant(blobs))["probabilities"].shape == (2, 3)


def test_a_polling_reader_never_sees_a_partial_version(trained, tmp_path):
    import threading

    model, class_names = trained
    base_path = tmp_path / "polled"
    base_path.mkdir()
    seen, partial, done = set(), [], threading.Event()
    required = ["saved_model.pb", "variables/variables.index", "assets/labels.txt",
                "assets.extra/metadata.json", "assets.extra/tf_serving_warmup_requests"]

    def poll():
        # As TF Serving's file system poller does: numeric folders only. The
        # scan after `done` is set sees the last version, however late it came.
        while True:
            finished = done.is_set()
            for version in base_path.iterdir():
                if version.name.isdigit() and version.name not in seen:
                    missing = [r for r in required if not (version / r).exists()]
                    if missing:
                        partial.append((version.name, missing))
                    seen.add(version.name)
            if finished:
                return

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for _ in range(3):
            tftransfer.export_saved_model(model, base_path, class_names)
    finally:
        done.set()
        poller.join()
    assert partial == []
    assert seen == {"1", "2", "3"}


@pytest.fixture(scope="module")
def demo_model():
    """The bundled base with a head trained briefly on the demo data."""
    import keras

    from tftransfer.cli import DEMO_DATA

    keras.utils.set_random_seed(0)
    base = tftransfer.load_base("fashion_mobilenet_v2")
    data = tftransfer.image_folder(DEMO_DATA, base.input_size, batch_size=32)
    model = tftransfer.build_classifier(base, len(data.class_names))
    tftransfer.fine_tune(
        model, data.train, data.validation,
        head=tftransfer.Phase.head(epochs=15, learning_rate=3e-3),
        top=tftransfer.Phase.top(epochs=0), verbose=0)
    return model, data


@pytest.mark.slow
def test_every_tflite_variant_runs_and_float16_agrees(demo_model, tmp_path):
    from tftransfer.export.tflite import TFLiteClassifier, export_tflite_variants

    model, data = demo_model
    report = export_tflite_variants(model, tmp_path / "tflite", validation=data.test,
                                    representative_data=data.train,
                                    class_names=data.class_names)
    by_name = {row["quantization"]: row for row in report}
    assert set(by_name) == {"keras", "float32", "float16", "dynamic_range", "int8"}
    keras_accuracy = by_name["keras"]["accuracy"]
    assert keras_accuracy > 0.4  # Far above the 0.2 of chance: a real model.
    for name in ["float32", "float16", "dynamic_range"]:
        assert abs(by_name[name]["accuracy"] - keras_accuracy) < 0.03, by_name[name]
    assert by_name["int8"]["accuracy"] > keras_accuracy - 0.1, by_name["int8"]
    # The model is small, so the graph weighs as much as the weights.
    assert by_name["float16"]["bytes"] < 0.9 * by_name["float32"]["bytes"]
    assert by_name["int8"]["bytes"] < 0.8 * by_name["float32"]["bytes"]

    saved = tftransfer.export_saved_model(model, tmp_path / "saved", data.class_names)
    serve = tf.saved_model.load(str(saved)).signatures["serving_images"]
    fp16 = TFLiteClassifier(by_name["float16"]["path"])
    images = np.concatenate([x.numpy() for x, _ in data.test])
    expected = serve(images=tf.constant(images))["probabilities"].numpy().argmax(1)
    agreement = np.mean(fp16.predict(images).argmax(1) == expected)
    assert agreement >= 0.99, agreement


def test_tflite_errors_name_the_problem(trained, tmp_path):
    from tftransfer.export.tflite import export_tflite

    model, _ = trained
    with pytest.raises(tftransfer.TransferError, match="needs representative_data"):
        export_tflite(model, tmp_path / "m.tflite", quantization="int8")
    with pytest.raises(tftransfer.TransferError, match="unknown TFLite quantization"):
        export_tflite(model, tmp_path / "m.tflite", quantization="int4")


def test_serving_refuses_huge_images_from_their_header_before_decoding(exported):
    import time

    _, _, path = exported
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    buffer = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buffer, "PNG")  # 400 MP in about 390 KB.
    huge = buffer.getvalue()
    assert len(huge) < 500_000
    small = encoded(np.zeros((20, 20, 3), np.uint8), "PNG")
    serve(image_bytes=tf.constant([small]))  # Traced and warm: what follows is the check.
    start = time.perf_counter()
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        serve(image_bytes=tf.constant([small, huge, huge, huge]))
    assert time.perf_counter() - start < 1.0  # Decoding one would take seconds and 1.2 GB.
    assert json.loads((path / "assets.extra" / "metadata.json").read_text())[
        "max_pixels"] == 200_000_000


def test_the_export_sets_its_own_pixel_limit(trained, tmp_path):
    model, class_names = trained
    path = tftransfer.export_saved_model(model, tmp_path / "m", class_names, max_pixels=1000)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    serve(image_bytes=tf.constant([encoded(np.zeros((20, 30, 3), np.uint8), "PNG")]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than 1000 pixels"):
        serve(image_bytes=tf.constant([encoded(np.zeros((40, 30, 3), np.uint8), "JPEG")]))


def test_an_export_that_loses_the_race_for_a_version_takes_the_next(trained, tmp_path,
                                                                    monkeypatch):
    from tftransfer.export import saved_model as export

    model, class_names = trained
    base = tmp_path / "m"
    real, raced = export._write_saved_model, []

    def meanwhile(model, staging, *args):
        # Another process publishes the version this export picked, while it writes.
        if not raced:
            raced.append(True)
            tftransfer.export_saved_model(model, base, class_names, version=1)
        real(model, staging, *args)

    monkeypatch.setattr(export, "_write_saved_model", meanwhile)
    path = tftransfer.export_saved_model(model, base, class_names)
    assert path == base / "2" and (base / "1" / "saved_model.pb").is_file()
    assert (path / "saved_model.pb").is_file()  # The trained model is not lost.
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # No staging left.
    with pytest.raises(tftransfer.TransferError, match="already exists"):
        tftransfer.export_saved_model(model, base, class_names, version=2)


def test_rest_bodies_of_both_signatures_fit_the_saved_model(exported):
    """The bodies docs/serving.md builds, checked and run as TF Serving would."""
    import base64

    model, class_names, path = exported
    loaded = tf.saved_model.load(str(path))
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)
    png = encoded(image, "PNG")
    bytes_body = json.dumps({"signature_name": "serving_default",
                             "instances": [{"b64": base64.b64encode(png).decode()}]})
    pixels_body = json.dumps({"signature_name": "serving_images",
                              "instances": [image.astype(np.float32).tolist()]})
    answers = []
    for body in (bytes_body, pixels_body):
        request = json.loads(body)
        signature = loaded.signatures[request["signature_name"]]
        (name, spec), = signature.structured_input_signature[1].items()
        instances = request["instances"]
        if isinstance(instances[0], dict):  # TF Serving decodes {"b64": ...} to bytes.
            value = tf.constant([base64.b64decode(i["b64"]) for i in instances])
        else:
            value = tf.constant(np.array(instances, spec.dtype.as_numpy_dtype))
        assert value.dtype == spec.dtype and spec.shape.is_compatible_with(value.shape)
        answers.append(signature(**{name: value})["probabilities"].numpy())
    np.testing.assert_allclose(answers[0], answers[1], atol=1e-5)  # The same pixels.


def test_multi_label_export_returns_the_labels_over_their_thresholds(multi_label_export,
                                                                     multi_label_csv):
    from tftransfer.models.multi_label import thresholds_of

    model, folder = multi_label_export
    version = folder / "1"
    metadata = json.loads((version / "assets.extra" / "metadata.json").read_text())
    assert metadata["multi_label"] is True
    np.testing.assert_allclose(metadata["thresholds"], [0.45, 0.5, 0.55])
    path, _ = multi_label_csv
    files = sorted((path.parent / "images").glob("*.png"))[:6]
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    out = serve(image_bytes=tf.constant([f.read_bytes() for f in files]))
    images = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32) for f in files])
    expected = model(images, training=False).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    over = expected >= thresholds_of(model)
    np.testing.assert_array_equal(out["over_threshold"].numpy(), over)
    names = np.array([b"blue", b"green", b"red"])
    np.testing.assert_array_equal(out["labels"].numpy(), np.where(over, names, b""))
    assert out["thresholds"].shape == (6, 3)


@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_multi_label_tflite_returns_over_threshold_and_writes_thresholds(
        multi_label_export, multi_label_csv, tmp_path, quantization):
    from tftransfer.export.tflite import TFLiteClassifier, export_tflite

    model, _ = multi_label_export
    path, _ = multi_label_csv
    data = tftransfer.load_data(path, (32, 32), validation_split=0.0)
    written = export_tflite(model, tmp_path / "m.tflite", quantization=quantization,
                            representative_data=data.train,
                            class_names=["blue", "green", "red"])
    assert (tmp_path / "thresholds.txt").read_text().split() == ["0.45", "0.5", "0.55"]
    classifier = TFLiteClassifier(written)
    np.testing.assert_allclose(classifier.thresholds, [0.45, 0.5, 0.55])
    images = next(iter(data.train))[0].numpy()[:8]
    outputs = classifier.outputs(images)
    expected = model(images, training=False).numpy()
    tolerance = 1e-5 if quantization == "float32" else 0.05
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=tolerance)
    clear = np.abs(expected - classifier.thresholds) > tolerance  # Not on the fence.
    np.testing.assert_array_equal((outputs["over_threshold"] > 0.5)[clear],
                                  (expected >= classifier.thresholds)[clear])


@pytest.mark.slow
def test_mediapipe_image_classifier_runs_every_variant_by_its_metadata(demo_model, tmp_path):
    vision = pytest.importorskip(
        "mediapipe.tasks.python.vision",
        reason="MediaPipe Tasks is not installed (pip install 'tftransfer[mediapipe]')")
    import mediapipe
    from mediapipe.tasks.python import BaseOptions

    from tftransfer.export.tflite import TFLiteClassifier, export_tflite

    model, data = demo_model
    images = np.concatenate([x.numpy() for x, _ in data.test])
    by_keras = model.predict(images, verbose=0).argmax(1)
    # The agreement each variant is held to: docs/serving.md#tflite.
    floor = {"float32": 0.99, "float16": 0.99, "dynamic_range": 0.97, "int8": 0.9}
    for quantization, least in floor.items():
        path = export_tflite(model, tmp_path / f"{quantization}.tflite",
                             quantization=quantization, representative_data=data.train,
                             class_names=data.class_names)
        options = vision.ImageClassifierOptions(
            base_options=BaseOptions(model_asset_path=str(path)), max_results=1)
        with vision.ImageClassifier.create_from_options(options) as classifier:
            answers = [classifier.classify(mediapipe.Image(
                image_format=mediapipe.ImageFormat.SRGB,
                data=np.ascontiguousarray(image.astype(np.uint8)))).classifications[0]
                .categories[0] for image in images]
        # Names, not indices: the labels come from the file's metadata.
        by_mediapipe = np.array([data.class_names.index(a.category_name) for a in answers])
        by_ours = TFLiteClassifier(path).predict(images).argmax(1)
        # The same file: only ties, and int8's rounding of the input, may differ.
        same = 0.97 if quantization == "int8" else 0.99
        assert np.mean(by_mediapipe == by_ours) >= same, quantization
        assert np.mean(by_mediapipe == by_keras) >= least, quantization


def test_a_tflite_file_without_the_mediapipe_extra_has_no_metadata(trained, tmp_path,
                                                                   monkeypatch, caplog):
    from tftransfer.export import tflite_metadata
    from tftransfer.export.tflite import TFLiteClassifier, export_tflite

    model, class_names = trained
    monkeypatch.setattr(tflite_metadata, "metadata_available", lambda: False)
    # A multi-label export's leftover, which would make this file read as multi-label.
    (tmp_path / "thresholds.txt").write_text("0.5\n0.5\n0.5\n")
    with caplog.at_level("INFO", logger="tftransfer"):
        bare = export_tflite(model, tmp_path / "bare.tflite", class_names=class_names)
    assert "carries no metadata" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.tflite", "labels.txt"]
    monkeypatch.undo()
    if not tflite_metadata.metadata_available():
        pytest.skip("mediapipe is not installed: no file with metadata to compare")
    tagged = export_tflite(model, tmp_path / "tagged" / "m.tflite", class_names=class_names)
    import zipfile

    assert not zipfile.is_zipfile(bare)
    with zipfile.ZipFile(tagged) as packed:  # The labels, packed after the model.
        assert packed.read("labels.txt").decode().split() == class_names
    assert b"TFLITE_METADATA" in tagged.read_bytes()
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(TFLiteClassifier(tagged).predict(images),
                               TFLiteClassifier(bare).predict(images), atol=1e-6)


def test_tflite_files_run_on_litert_where_it_is_installed(trained, tmp_path):
    litert = pytest.importorskip("ai_edge_litert.interpreter",
                                 reason="LiteRT is not installed (pip install "
                                        "'tftransfer[litert]')")
    from tftransfer.export.tflite import export_tflite, tflite_interpreter

    model, class_names = trained
    path = export_tflite(model, tmp_path / "m.tflite", class_names=class_names)
    interpreter = tflite_interpreter(path)
    assert isinstance(interpreter, litert.Interpreter)
    images = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    answer = interpreter.get_signature_runner()(images=images)
    np.testing.assert_allclose(next(iter(answer.values())),
                               model(images, training=False).numpy(), atol=1e-5)


@pytest.mark.slow
def test_the_mediapipe_and_litert_examples_of_the_docs_run(demo_model, tmp_path, capsys):
    pytest.importorskip("mediapipe.tasks.python.vision", reason="MediaPipe is not installed")
    pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is not installed")
    from conftest import serving_docs_code
    from tftransfer.export.tflite import export_tflite

    model, data = demo_model
    folder = tmp_path / "exports" / "demo" / "tflite"
    export_tflite(model, folder / "model_float32.tflite", class_names=data.class_names)
    image = next(iter(data.test))[0][0].numpy().astype("uint8")
    Image.fromarray(image).save(tmp_path / "shoe.png")
    namespace = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        exec(serving_docs_code("### Metadata, for MediaPipe Tasks"), namespace)
        printed = capsys.readouterr().out.splitlines()
        assert len(printed) == 3 and printed[0].split()[0] in data.class_names
        exec(serving_docs_code("### LiteRT"), namespace)
    np.testing.assert_allclose(namespace["probabilities"],
                               model(image[None].astype("float32"), training=False),
                               atol=1e-5)
