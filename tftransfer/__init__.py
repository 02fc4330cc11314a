"""tftransfer: transfer learning for Keras 3 on TensorFlow.

    import tftransfer

    base = tftransfer.load_base("efficientnet_v2_b0")
    train, val, class_names = tftransfer.image_folder("photos/", base.input_size)
    model = tftransfer.build_classifier(base, len(class_names))
    tftransfer.fine_tune(model, train, val, top=tftransfer.Phase.top(unfreeze=30))
    tftransfer.export_saved_model(model, "exports/photos", class_names)
    tftransfer.evaluate(model, "photos/").save("report/")
"""

import importlib

#: Where each public name lives. They load on first use (PEP 562), so that
#: `tftransfer --help` and the light modules never wait for TensorFlow.
_PUBLIC = {
    "AuditReport": "tftransfer.data_audit",
    "Base": "tftransfer.features",
    "FineTuneHistory": "tftransfer.training",
    "Phase": "tftransfer.phases",
    "Plan": "tftransfer.plan",
    "Predictions": "tftransfer.predict",
    "RunOptions": "tftransfer.plan",
    "TransferError": "tftransfer.errors",
    "audit": "tftransfer.data_audit",
    "build_augmentation": "tftransfer.builder",
    "build_classifier": "tftransfer.builder",
    "clear_feature_cache": "tftransfer.feature_cache",
    "compare": "tftransfer.comparison",
    "distribute": "tftransfer.distribute",
    "evaluate": "tftransfer.evaluation",
    "export_saved_model": "tftransfer.export",
    "fine_tune": "tftransfer.training",
    "image_folder": "tftransfer.data",
    "list_bases": "tftransfer.bases",
    "load_base": "tftransfer.bases",
    "load_data": "tftransfer.data",
    "plan_fine_tune": "tftransfer.plan",
    "predict_files": "tftransfer.predict",
    "register_base": "tftransfer.bases",
    "set_trainable": "tftransfer.builder",
}

__version__ = "0.1.0"

__all__ = [
    "AuditReport",
    "Base",
    "FineTuneHistory",
    "Phase",
    "Plan",
    "Predictions",
    "RunOptions",
    "TransferError",
    "audit",
    "build_augmentation",
    "build_classifier",
    "clear_feature_cache",
    "compare",
    "distribute",
    "evaluate",
    "export_saved_model",
    "fine_tune",
    "image_folder",
    "list_bases",
    "load_data",
    "load_base",
    "plan_fine_tune",
    "predict_files",
    "register_base",
    "set_trainable",
]


def __getattr__(name):
    where = _PUBLIC.get(name)
    if where is None:
        raise AttributeError(f"module 'tftransfer' has no attribute {name!r}")
    module = importlib.import_module(where)
    value = module if where == f"tftransfer.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))

