"""The classifier: a base's features followed by a new softmax (or sigmoid) head.

A classifier built here has two named parts, in the manner of timm's
`forward_features` / `forward_head`:

* `"features"`: the base (preprocessing, pretrained backbone, pooling);
* `"head"`: dropout and a Dense softmax, the only part that is new (for
  labels that are not exclusive, sigmoids and their thresholds: see
  `tftransfer.models.multi_label`).

Because the head is its own model, it can be trained alone on cached
features and still be the head of the full classifier, and a base can be
swapped without touching the head code.
"""

from typing import Optional, Union

import keras

from tftransfer.defaults import NO_UNFREEZE
from tftransfer.errors import TransferError
from tftransfer.models.features import Base, find_backbone, is_module_backbone
from tftransfer.models.multi_label import LabelThresholds


#: `augmentation="auto"`: what `build_classifier` adds by default. Flips,
#: small rotations and zooming in keep a photo's class
#: (docs/benchmarks.md#the-defaults-evidence). `fine_tune` caches augmented
#: views only where that pays (see `augmented_views`).
DEFAULT_AUGMENTATION = {"flip": "horizontal", "rotation": 0.1, "zoom": (-0.2, 0.0)}


def build_classifier(base: Base, num_classes: int, *, dropout: float = 0.2,
                     augmentation: Union[str, dict, keras.Model, None] = "auto",
                     unfreeze: Union[str, int] = "none", multi_label: bool = False,
                     name: str = "classifier") -> keras.Model:
    """Builds a classifier from a base and a new Dense softmax head.

    Args:
        base: A `Base` from `load_base`.
        num_classes: The number of classes (labels, with `multi_label`), at
            least 2.
        dropout: The dropout rate before the Dense layer.
        augmentation: Random augmentation applied to the images in
            training only: `"auto"` (`DEFAULT_AUGMENTATION`), a dict of
            `build_augmentation` arguments, a list of Keras layers, or a
            Keras model. `None` for none.
        unfreeze: Which backbone layers train: `"none"` (feature
            extraction), `"all"`, an int N (the top N layers), or a layer
            name (that layer and all above it). See `set_trainable`.
        multi_label: Labels that are not exclusive: one sigmoid per label,
            each with its own threshold (`multi_label.LabelThresholds`),
            trained on multi-hot labels with binary cross-entropy.
        name: The model's name.

    Returns:
        A `keras.Model` from `[0, 255]` RGB images of `base.input_size` to
        class probabilities (float32, also under mixed precision): summing
        to 1, or with `multi_label` one independent probability per label.
    """
    if int(num_classes) < 2:
        raise TransferError(f"a classifier needs at least 2 classes, got {num_classes}")
    inputs = keras.Input((*base.input_size, 3), name="image")
    head = build_head(base.feature_dim, num_classes, dropout=dropout, multi_label=multi_label)
    x = inputs
    if isinstance(augmentation, str):
        if augmentation != "auto":
            raise TransferError(f"augmentation must be 'auto', a dict, layers, a model or "
                                f"None, got {augmentation!r}")
        augmentation = DEFAULT_AUGMENTATION
    if augmentation:
        if isinstance(augmentation, dict):
            augmentation = build_augmentation(**augmentation)
        elif not isinstance(augmentation, keras.Model):
            augmentation = keras.Sequential(list(augmentation), name="augmentation")
        if augmentation.name != "augmentation":
            augmentation = keras.Sequential([augmentation], name="augmentation")
        if augmentation.layers:
            x = augmentation(x)
    outputs = head(base.features(x))
    model = keras.Model(inputs, outputs, name=name)
    set_trainable(model, unfreeze)
    return model


def build_head(feature_dim, num_classes, *, dropout=0.2, multi_label=False):
    """Builds the new head: dropout and a Dense softmax (or sigmoids).

    Args:
        feature_dim: The length of the feature vectors it takes.
        num_classes: The number of classes (or labels).
        dropout: The dropout rate.
        multi_label: Sigmoids and a `LabelThresholds` layer instead of a softmax.

    Returns:
        A `keras.Sequential` named `"head"`, features in, probabilities out.
    """
    layers = [
        keras.Input((feature_dim,), name="features"),
        keras.layers.Dropout(dropout, name="dropout"),
        # float32 so that the softmax stays stable under mixed precision.
        keras.layers.Dense(num_classes, activation="sigmoid" if multi_label else "softmax",
                           dtype="float32", name="probabilities"),
    ]
    if multi_label:
        layers.append(LabelThresholds(num_classes, dtype="float32", name="thresholds"))
    return keras.Sequential(layers, name="head")


def build_augmentation(*, flip: Optional[str] = "horizontal", rotation: float = 0.0,
                       zoom: float = 0.0, translation: float = 0.0, contrast: float = 0.0,
                       seed: Optional[int] = None) -> keras.Sequential:
    """Builds random augmentation from Keras preprocessing layers.

    The layers act only in training; at inference (and in the export) they
    pass images through unchanged.

    Args:
        flip: `"horizontal"`, `"vertical"`, `"horizontal_and_vertical"`,
            or `None` for no flip.
        rotation: The largest rotation, as a fraction of a full turn.
        zoom: The largest zoom in or out, as a fraction of the size, or a
            `(low, high)` range, where negative zooms in (as in
            `keras.layers.RandomZoom`).
        translation: The largest shift, as a fraction of the size.
        contrast: The largest contrast change, as a fraction.
        seed: Seeds the layers.

    Returns:
        A `keras.Sequential` named `"augmentation"`.

    Example:
    >>> augmentation = build_augmentation(rotation=0.05, zoom=0.1)
    >>> [layer.name for layer in augmentation.layers]
    ['flip', 'rotation', 'zoom']
    """
    layers = keras.layers
    chosen = []
    if flip:
        chosen.append(layers.RandomFlip(flip, seed=seed, name="flip"))
    if rotation:
        chosen.append(layers.RandomRotation(rotation, seed=seed, name="rotation"))
    if zoom:
        chosen.append(layers.RandomZoom(zoom, seed=seed, name="zoom"))
    if translation:
        chosen.append(layers.RandomTranslation(translation, translation, seed=seed,
                                               name="translation"))
    if contrast:
        chosen.append(layers.RandomContrast(contrast, seed=seed, name="contrast"))
    return keras.Sequential(chosen, name="augmentation")


def augmentation_of(model):
    """Returns the `"augmentation"` model of a classifier, or `None`."""
    try:
        return model.get_layer("augmentation")
    except ValueError:
        return None


def head_of(model):
    """Returns the `"head"` model of a classifier from `build_classifier`."""
    try:
        return model.get_layer("head")
    except ValueError:
        raise TransferError(f"model {model.name!r} has no 'head'; build it with "
                            "tftransfer.build_classifier") from None


def backbone_layers(model):
    """Returns the backbone's layers, bottom first, that `trainable` counts."""
    backbone = find_backbone(model)
    if is_module_backbone(model):
        return [backbone]
    return [l for l in backbone.layers if not isinstance(l, keras.layers.InputLayer)]


def set_trainable(model: keras.Model, unfreeze: Union[str, int]) -> int:
    """Freezes the backbone of a classifier, all but its top layers.

    BatchNormalization layers always stay frozen. In Keras 3 a frozen
    BatchNormalization layer runs in inference mode, so fine-tuning never
    overwrites the pretrained moving statistics with those of small batches.
    The head is always trainable.

    Args:
        model: A classifier from `build_classifier`.
        unfreeze: `"none"` (freeze all, `NO_UNFREEZE`), `"all"`, an int N
            (the top N layers), or the name of the lowest layer to train.
            For a TF Hub module, which is one layer, N counts its
            variables: the last N of `HubModule.fine_tunable_variables`.

    Returns:
        The number of backbone layers (for a TF Hub module, variables) set
        trainable.
    """
    layers = backbone_layers(model)
    backbone = find_backbone(model)
    if is_module_backbone(model):
        return _set_module_trainable(model, backbone, unfreeze)
    count = _count_trainable(unfreeze, layers, backbone.name)
    set_trainable_flag(model.get_layer("features"), count > 0)
    for index, layer in enumerate(layers):
        if count and index < len(layers) - count:
            set_trainable_flag(layer, False)
        if isinstance(layer, keras.layers.BatchNormalization):
            set_trainable_flag(layer, False)
    set_trainable_flag(head_of(model), True)
    return count


def unfrozen_count(model: keras.Model, unfreeze: Union[str, int]) -> int:
    """What `set_trainable(model, unfreeze)` would set trainable, without setting anything.

    Args:
        model, unfreeze: As in `set_trainable`.

    Returns:
        The number of backbone layers (for a TF Hub module, variables).
    """
    backbone = find_backbone(model)
    if is_module_backbone(model):
        count = _module_count(backbone, unfreeze)
        return len(backbone.fine_tunable_variables) if count is None else count
    return _count_trainable(unfreeze, backbone_layers(model), backbone.name)


def _module_count(module, unfreeze):
    """A TF Hub module's variables to train: 0, `None` for all, or N."""
    if isinstance(unfreeze, str) and unfreeze not in ("none", "all") and not unfreeze.isdigit():
        raise TransferError(f"the TF Hub module {module.name!r} has no layer names; "
                            "unfreeze 'none', 'all' or a number of its variables")
    return 0 if unfreeze == NO_UNFREEZE else None if unfreeze == "all" else int(unfreeze)


def _set_module_trainable(model, module, unfreeze):
    """`set_trainable` for a TF Hub module: none of it, all of it, or its top N variables."""
    count = _module_count(module, unfreeze)
    set_trainable_flag(model.get_layer("features"), count != 0)
    if count != 0:
        module.unfrozen_variables = count
    set_trainable_flag(head_of(model), True)
    return len(module.fine_tunable_variables) if count is None else count


def set_trainable_flag(layer, value):
    """Sets `layer.trainable` and, recursively, that of its sub-layers.

    Plain `layer.trainable = value` is skipped by TensorFlow's attribute
    tracking when the layer already has that value, so sub-layers that
    differ keep theirs; calling the property's setter always recurses.
    """
    type(layer).trainable.fset(layer, value)
    for sublayer in layer.layers if isinstance(layer, keras.Model) else []:
        set_trainable_flag(sublayer, value)


def _count_trainable(trainable, layers, backbone_name):
    if trainable == NO_UNFREEZE:
        return 0
    if trainable is None:
        raise TransferError(f"unfreeze=None: pass {NO_UNFREEZE!r} to freeze the whole base")
    if trainable == "all":
        return len(layers)
    if isinstance(trainable, str) and not trainable.isdigit():
        names = [layer.name for layer in layers]
        if trainable not in names:
            raise TransferError(f"the base {backbone_name!r} has no layer named "
                                f"{trainable!r}")
        return len(layers) - names.index(trainable)
    count = int(trainable)
    if not 0 <= count <= len(layers):
        raise TransferError(f"cannot unfreeze {count} layers: the base "
                            f"{backbone_name!r} has {len(layers)} layers")
    return count
