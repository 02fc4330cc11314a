"""Export: a trained classifier in, files that other runtimes serve out.

* `saved_model`: versioned SavedModels that TF Serving loads as is;
* `model_versions`: their version folders;
* `tflite`, `tflite_metadata`: TFLite files, with MediaPipe's metadata;
* `onnx_export`: ONNX files for ONNX Runtime and Triton;
* `exported`: one loader of any of these exports;
* `predict`: classifying image files with an export.
"""

from tftransfer._lazy import lazy_names as _lazy_names

_PUBLIC = {
    "ExportedModel": "tftransfer.export.exported",
    "Predictions": "tftransfer.export.predict",
    "export_saved_model": "tftransfer.export.saved_model",
    "export_tflite": "tftransfer.export.tflite",
    "load_exported": "tftransfer.export.exported",
    "predict_files": "tftransfer.export.predict",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = _lazy_names(globals(), _PUBLIC)
