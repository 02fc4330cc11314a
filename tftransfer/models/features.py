"""A base's feature extractor: preprocessing, backbone and pooling, as one model.

A *base* maps raw RGB pixels in `[0, 255]` to one feature vector per image.
It carries its own preprocessing (a `Preprocess` layer) and input size, so
a classifier built on it, and everything exported from that classifier,
takes plain pixels. This is the `forward_features` half of a classifier;
`tftransfer.models.builder` adds the head.
"""

import dataclasses

import keras
from keras import ops

from tftransfer.errors import TransferError

# Mean and standard deviation used by the "torch" and "caffe" modes of
# `keras.applications.imagenet_utils.preprocess_input`.
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="tftransfer")
class Preprocess(keras.layers.Layer):
    """Maps RGB pixels in `[0, 255]` to the value range a base expects.

    Living inside the model (rather than in the input pipeline) means a
    saved or exported classifier takes raw pixels, exactly as in training.

    Args:
        mode: One of `"none"` (pixels pass through: the base rescales
            itself, as EfficientNet, ConvNeXt and MobileNetV3 do), `"unit"`
            (`[0, 1]`, as TF Hub image modules expect), `"tf"` (`[-1, 1]`),
            `"torch"` (ImageNet mean/std) or `"caffe"` (BGR, mean removed).
    """

    MODES = ("none", "unit", "tf", "torch", "caffe")

    def __init__(self, mode="none", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise TransferError(
                f"unknown preprocessing {mode!r}; expected one of {self.MODES}"
            )
        self.mode = mode

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.array(_TORCH_MEAN, dtype=self.compute_dtype)
            std = ops.array(_TORCH_STD, dtype=self.compute_dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":
            mean = ops.array(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
            return ops.flip(x, axis=-1) - mean
        return x

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@dataclasses.dataclass(frozen=True)
class Base:
    """A feature extractor and the input contract it expects.

    Attributes:
        name: The registry name or the path it was loaded from.
        features: A Keras model, RGB `[0, 255]` images of `input_size` in,
            one feature vector per image out; preprocessing included.
        input_size: `(height, width)` in pixels.
        preprocessing: The `Preprocess` mode inside `features`.
    """

    name: str
    features: keras.Model
    input_size: tuple
    preprocessing: str

    @property
    def feature_dim(self):
        """The length of the feature vector."""
        return int(self.features.output.shape[-1])

    @property
    def backbone(self):
        """The pretrained part of `features`, whose layers get unfrozen."""
        return find_backbone(self.features)


def assemble_features(backbone, input_size, preprocessing):
    """Wraps a backbone with its preprocessing and, if needed, pooling.

    Args:
        backbone: A Keras layer or model from images to a feature vector or
            a feature map.
        input_size: `(height, width)`.
        preprocessing: A `Preprocess` mode.

    Returns:
        A `keras.Model` named `"features"`: `[0, 255]` RGB in, vector out.

    Example:
    >>> features = assemble_features(keras.applications.MobileNetV2(
    ...     include_top=False, weights=None), (224, 224), "tf")
    """
    inputs = keras.Input((*input_size, 3), name="image")
    x = Preprocess(preprocessing, name="preprocess")(inputs)
    x = backbone(x)
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    elif len(x.shape) != 2:
        raise TransferError(
            f"the base {backbone.name!r} outputs shape {tuple(x.shape)}; "
            "expected a feature vector or a feature map")
    return keras.Model(inputs, x, name="features")


def add_taps(backbone, taps):
    """Adds the pooled outputs of inner layers to a backbone's features.

    The top blocks of a pretrained network specialise in the classes it was
    trained on; blocks a little lower hold features that transfer more
    widely. Reading both lets the head use either (as in Head2Toe, Evci et
    al. 2022).

    Args:
        backbone: A functional Keras model whose output is a feature vector
            or a feature map.
        taps: Names of layers inside it whose outputs (feature maps) are
            pooled and appended to the features. Empty: `backbone` as is.

    Returns:
        A Keras model over the same layers (so it trains them), named as
        `backbone`, with one feature vector out: its own features, then
        each tap's.

    Example:
    >>> backbone = keras.applications.MobileNetV2(
    ...     include_top=False, weights=None, input_shape=(96, 96, 3), pooling="avg")
    >>> add_taps(backbone, ["block_14_add"]).output.shape
    (None, 1440)
    """
    if not taps:
        return backbone
    names = {layer.name for layer in getattr(backbone, "layers", [])}
    missing = [tap for tap in taps if tap not in names]
    if missing:
        raise TransferError(f"the base {backbone.name!r} has no layer named "
                            f"{', '.join(map(repr, missing))} to tap")
    last = backbone.layers[-1].name if backbone.layers else "output"
    pooled = []
    for name, tensor in [(last, backbone.output)] + [(tap, backbone.get_layer(tap).output)
                                                     for tap in taps]:
        if len(tensor.shape) == 4:
            tensor = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(tensor)
        pooled.append(tensor)
    outputs = keras.layers.Concatenate(name="features_and_taps")(pooled)
    return keras.Model(backbone.inputs, outputs, name=backbone.name)


def find_backbone(model):
    """Returns the pretrained layer inside a features model or a classifier.

    Args:
        model: A `features` model from `assemble_features`, or a classifier
            from `build_classifier` that contains one.

    Returns:
        The backbone layer (usually a nested `keras.Model`).
    """
    features = _find_features(model)
    for layer in features.layers:
        if not isinstance(layer, (keras.layers.InputLayer, Preprocess,
                                  keras.layers.GlobalAveragePooling2D)):
            return layer
    raise TransferError(f"model {model.name!r} holds no backbone")


def is_module_backbone(model) -> bool:
    """Whether a classifier's (or features model's) backbone is one opaque layer.

    A TF Hub module is a single layer: it has no layers to count or cut, so
    its top phase unfreezes variables and cannot be cached at a cut.

    Args:
        model: As in `find_backbone`.

    Returns:
        `True` for a TF Hub module (any backbone that is not a `keras.Model`).
    """
    return not isinstance(find_backbone(model), keras.Model)


def _find_features(model):
    if model.name == "features":
        return model
    try:
        return model.get_layer("features")
    except ValueError:
        raise TransferError(
            f"model {model.name!r} has no 'features' layer; build it with "
            "tftransfer.build_classifier") from None


def base_from_model(model):
    """Recovers the `Base` inside a classifier built by `build_classifier`."""
    features = _find_features(model)
    preprocess = next(l for l in features.layers if isinstance(l, Preprocess))
    return Base(name=find_backbone(model).name, features=features,
                input_size=tuple(features.input_shape[1:3]),
                preprocessing=preprocess.mode)
