"""Image-classifier metadata inside `.tflite` files, for MediaPipe Tasks and LiteRT clients.

MediaPipe Tasks' `ImageClassifier` (and the TFLite Task Library before it)
read from the model file itself how to scale the input pixels and what
each output means. A float model without that metadata is refused ("it
requires specifying NormalizationOptions metadata"); one without labels
answers with indices. `add_metadata` writes, as MediaPipe's own
`metadata_writers.image_classifier` does:

* the input's normalisation: mean 0 and std 1, since tftransfer's models
  take RGB pixels in `[0, 255]` and scale them inside; its colour space
  (RGB) and value range;
* each output's labels, as an associated file `labels.txt` packed into the
  model file (a zip archive after the flatbuffer, which TFLite ignores);
* nothing more for quantised models: their scale and zero point already
  sit on their input and output tensors, where clients read them.

It builds the metadata with MediaPipe's generated schema and
`metadata_info` classes (the optional `mediapipe` extra). MediaPipe
1.2.3's `metadata_writers.MetadataWriter` cannot be imported: it needs a
compiled module that its wheels leave out (`mediapipe.tasks.cc`), so the
metadata is packed into the model here, in the way its
`MetadataPopulator` does.
"""

import io
import logging
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

logger = logging.getLogger("tftransfer")

#: What `ModelMetadata.min_parser_version` says: the fields written here are
#: all in the first version of the metadata schema.
MIN_PARSER_VERSION = "1.0.0"
#: The names TFLite and the metadata schema give their flatbuffers.
_MODEL_IDENTIFIER = b"TFL3"
_METADATA_IDENTIFIER = b"M001"
_METADATA_FIELD = "TFLITE_METADATA"


def metadata_available() -> bool:
    """Whether the `mediapipe` extra that writes metadata is installed."""
    try:
        from mediapipe.tasks.python.metadata.metadata_writers import metadata_info  # noqa: F401
    except ImportError:
        return False
    return True


def add_metadata(flatbuffer: bytes, class_names: Sequence[str], *,
                 name: str = "ImageClassifier",
                 description: str = "A tftransfer image classifier.") -> bytes:
    """Returns a TFLite classifier with image-classifier metadata and its labels.

    Args:
        flatbuffer: The `.tflite` model, from `export_tflite`: one image
            input (float32 pixels in `[0, 255]`, or uint8), and one or more
            outputs of one score per class.
        class_names: The labels of the outputs, in order.
        name: The model's name in its metadata.
        description: Its description.

    Returns:
        The model's bytes with the metadata in them and `labels.txt` packed
        after them.
    """
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta_fb
    from mediapipe.tasks.metadata import schema_py_generated as schema_fb

    model = schema_fb.ModelT.InitFromObj(schema_fb.Model.GetRootAsModel(flatbuffer, 0))
    graph = model.subgraphs[0]
    metadata = _model_metadata(meta_fb, model, graph, list(map(str, class_names)), name,
                               description)
    packed = _with_metadata(schema_fb, model, _finished(metadata.Pack, _METADATA_IDENTIFIER))
    archive = io.BytesIO(packed)
    with zipfile.ZipFile(archive, "a") as files:
        files.writestr("labels.txt", "".join(f"{label}\n" for label in class_names))
    return archive.getvalue()


def _model_metadata(meta_fb, model, graph, class_names, name, description):
    """The `ModelMetadataT` of an image classifier with these tensors."""
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_info

    general = metadata_info.GeneralMd(name=name, description=description)
    image = metadata_info.InputImageTensorMd(
        name="image", description="RGB pixels in [0, 255].", norm_mean=[0.0],
        norm_std=[1.0], color_space_type=meta_fb.ColorSpaceType.RGB,
        tensor_type=graph.tensors[graph.inputs[0]].type)
    with tempfile.TemporaryDirectory() as scratch:
        labels = Path(scratch) / "labels.txt"
        labels.write_text("".join(f"{label}\n" for label in class_names))
        outputs = [metadata_info.ClassificationTensorMd(
            name=graph.tensors[index].name.decode(), description="A score per class.",
            label_files=[metadata_info.LabelFileMd(str(labels))],
            tensor_type=graph.tensors[index].type).create_metadata()
            for index in graph.outputs]
    subgraph = meta_fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image.create_metadata()]
    subgraph.outputTensorMetadata = outputs
    metadata = general.create_metadata()
    metadata.subgraphMetadata = [subgraph]
    metadata.minParserVersion = MIN_PARSER_VERSION
    return metadata


def _with_metadata(schema_fb, model, metadata_bytes):
    """`model` packed with `metadata_bytes` in a buffer named `TFLITE_METADATA`."""
    buffer = schema_fb.BufferT()
    buffer.data = np.frombuffer(metadata_bytes, np.uint8)
    model.buffers = list(model.buffers or []) + [buffer]
    entry = schema_fb.MetadataT()
    entry.name = _METADATA_FIELD
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or [])
                      if m.name.decode() != _METADATA_FIELD] + [entry]
    return _finished(model.Pack, _MODEL_IDENTIFIER)


def _finished(pack, identifier):
    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.Finish(pack(builder), identifier)
    return bytes(builder.Output())
