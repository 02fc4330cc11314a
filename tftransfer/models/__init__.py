"""Models: pretrained bases in, a classifier (features, then a head) out.

* `bases`: the registry of named bases and `load_base`;
* `hub`: TF Hub modules as fine-tunable Keras 3 layers;
* `features`: a base's feature extractor (`Base`), preprocessing included;
* `builder`: `build_classifier`, the head, and the `trainable` flags;
* `boundary`: the classifier cut where its frozen part ends;
* `losses`: the losses and metrics of both phases;
* `multi_label`: sigmoid heads and their per-label thresholds;
* `saving`: loading model files, with Keras's safe mode kept.
"""

from tftransfer._lazy import lazy_names as _lazy_names

_PUBLIC = {
    "Base": "tftransfer.models.features",
    "build_augmentation": "tftransfer.models.builder",
    "build_classifier": "tftransfer.models.builder",
    "list_bases": "tftransfer.models.bases",
    "load_base": "tftransfer.models.bases",
    "load_model": "tftransfer.models.saving",
    "register_base": "tftransfer.models.bases",
    "set_trainable": "tftransfer.models.builder",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = _lazy_names(globals(), _PUBLIC)
