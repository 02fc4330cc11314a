"""tftransfer: transfer learning for Keras 3 on TensorFlow.

    import tftransfer

    base = tftransfer.load_base("efficientnet_v2_b0")
    train, val, class_names = tftransfer.image_folder("photos/", base.input_size)
    model = tftransfer.build_classifier(base, len(class_names))
    tftransfer.fine_tune(model, train, val, top=tftransfer.Phase.top(unfreeze=30))
    tftransfer.export_saved_model(model, "exports/photos", class_names)
    tftransfer.evaluate(model, "photos/").save("report/")
"""

from tftransfer import distribute
from tftransfer.data_audit import AuditReport, audit
from tftransfer.bases import list_bases, load_base, register_base
from tftransfer.builder import build_augmentation, build_classifier, set_trainable
from tftransfer.data import image_folder, load_data
from tftransfer.compare import compare
from tftransfer.errors import TransferError
from tftransfer.evaluation import evaluate
from tftransfer.export import export_saved_model
from tftransfer.predict import Predictions, predict_files
from tftransfer.feature_cache import clear_feature_cache
from tftransfer.features import Base
from tftransfer.phases import Phase
from tftransfer.plan import Plan, RunOptions, plan_fine_tune
from tftransfer.training import FineTuneHistory, fine_tune

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
