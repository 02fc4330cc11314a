import numpy as np
import pytest

import tftransfer
from tftransfer.export.onnx_export import _with_layer, export_onnx

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def demo():
    base = tftransfer.load_base("fashion_mobilenet_v2")
    from tftransfer.cli import DEMO_DATA

    data = tftransfer.image_folder(DEMO_DATA, base.input_size,
                                   validation_split=0)
    model = tftransfer.build_classifier(base, len(data.class_names))  # With augmentation.
    return model, data


def test_onnx_runtime_gives_the_keras_probabilities_on_the_demo_images(demo, tmp_path):
    model, data = demo
    path = export_onnx(model, tmp_path / "model.onnx", data.class_names)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["labels"].split("\n") == \
        data.class_names
    (images_input,) = session.get_inputs()
    assert images_input.name == "images" and images_input.shape[1:] == [48, 48, 3]
    for images, _ in data.test.take(4):
        onnx_probabilities = session.run(None, {"images": images.numpy()})[0]
        np.testing.assert_allclose(onnx_probabilities,
                                   model.predict(images, verbose=0), atol=1e-4)


def test_the_cli_writes_model_onnx_beside_the_versions(demo, tmp_path):
    from tftransfer import cli

    model, data = demo
    model.save(tmp_path / "m.keras")
    assert cli.main(["export", "--model", str(tmp_path / "m.keras"), "--export",
                     str(tmp_path / "out"), "--class-names", ",".join(data.class_names),
                     "--onnx"]) == 0
    assert (tmp_path / "out" / "onnx" / "model.onnx").is_file()
    assert (tmp_path / "out" / "1" / "saved_model.pb").is_file()


def test_conversion_errors_name_the_layer():
    message = ("No Op registered for StatelessRandomUniformV2 in node "
               "classifier_1/augmentation_1/flip_1/stateless_random_uniform")
    assert _with_layer(message).startswith("the layer 'augmentation' (classifier_1/")
    assert _with_layer("nothing named") == "nothing named"


def test_names_must_match_outputs(demo, tmp_path):
    model, _ = demo
    with pytest.raises(tftransfer.TransferError, match="2 class names"):
        export_onnx(model, tmp_path / "m.onnx", ["a", "b"])


def test_the_onnx_runtime_example_of_the_docs_runs(demo, tmp_path, monkeypatch, capsys):
    from conftest import serving_docs_code

    model, data = demo
    export_onnx(model, tmp_path / "DIR" / "onnx" / "model.onnx", data.class_names)
    pixels = next(iter(data.test))[0].numpy()[:2]
    namespace = {"pixels": pixels}
    monkeypatch.chdir(tmp_path)
    exec(serving_docs_code("## ONNX"), namespace)
    np.testing.assert_allclose(namespace["probabilities"],
                               model.predict(pixels, verbose=0), atol=1e-4)
    expected = data.class_names[int(namespace["probabilities"][0].argmax())]
    assert capsys.readouterr().out.strip() == expected


def test_a_file_onnx_runtime_cannot_load_never_replaces_the_working_one(demo, tmp_path,
                                                                         monkeypatch):
    from tftransfer.export import onnx_export
    from tftransfer.errors import TransferError

    import onnx
    import tf2onnx

    model, data = demo
    path = tmp_path / "onnx" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(b"the working file")

    def refuse(staging):
        assert staging != path and staging.is_file()  # Checked before any rename.
        raise TransferError("ONNX Runtime cannot run the converted model: ...")

    # The conversion itself is tested above; a tiny stand-in keeps this test fast.
    empty = onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], []))
    monkeypatch.setattr(tf2onnx.convert, "from_function", lambda *a, **k: (empty, None))
    monkeypatch.setattr(onnx_export, "_check_runs", refuse)
    with pytest.raises(TransferError):
        export_onnx(model, path, data.class_names)
    assert path.read_bytes() == b"the working file"
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # No staging left.
