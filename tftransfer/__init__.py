"""tftransfer: transfer learning for Keras 3 on TensorFlow.

    import tftransfer

    base = tftransfer.load_base("efficientnet_v2_b0")
    train, val, class_names = tftransfer.image_folder("photos/", base.input_size)
    model = tftransfer.build_classifier(base, len(class_names))
    tftransfer.fine_tune(model, train, val, top=tftransfer.Phase.top(unfreeze=30))
    tftransfer.export_saved_model(model, "exports/photos", class_names)
    tftransfer.evaluate(model, "photos/").save("report/")
"""

from tftransfer._lazy import lazy_names as _lazy_names

#: Where each public name lives. They load on first use (PEP 562), so that
#: `tftransfer --help` and the light modules never wait for TensorFlow.
_PUBLIC = {
    "AuditReport": "tftransfer.reports.data_audit",
    "Base": "tftransfer.models.features",
    "FineTuneHistory": "tftransfer.training.history",
    "Phase": "tftransfer.training.phases",
    "Plan": "tftransfer.training.plan",
    "Predictions": "tftransfer.export.predict",
    "RunOptions": "tftransfer.training.plan",
    "TransferError": "tftransfer.errors",
    "audit": "tftransfer.reports.data_audit",
    "build_augmentation": "tftransfer.models.builder",
    "build_classifier": "tftransfer.models.builder",
    "clear_feature_cache": "tftransfer.training.feature_cache",
    "compare": "tftransfer.reports.comparison",
    "distribute": "tftransfer.training.distribute",
    "evaluate": "tftransfer.reports.evaluation",
    "export_saved_model": "tftransfer.export.saved_model",
    "fine_tune": "tftransfer.training.fine_tuning",
    "image_folder": "tftransfer.data",
    "list_bases": "tftransfer.models.bases",
    "load_base": "tftransfer.models.bases",
    "load_data": "tftransfer.data",
    "load_model": "tftransfer.models.saving",
    "plan_fine_tune": "tftransfer.training.plan",
    "predict_files": "tftransfer.export.predict",
    "register_base": "tftransfer.models.bases",
    "set_trainable": "tftransfer.models.builder",
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
    "load_model",
    "plan_fine_tune",
    "predict_files",
    "register_base",
    "set_trainable",
]


__getattr__, __dir__ = _lazy_names(globals(), _PUBLIC)
