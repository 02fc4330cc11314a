"""Pretrained bases: a registry of named feature extractors and `load_base`.

`load_base` returns a `tftransfer.models.features.Base`: a Keras model from raw
RGB pixels in `[0, 255]` to one feature vector per image, with its own
preprocessing and input size. It loads a registry name, a `.keras` file, or
a TF Hub module / SavedModel (through `tftransfer.models.hub`).

Adding a base is one call to `register_base` (or one row in
`_KERAS_APPLICATIONS`).
"""

import dataclasses
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import keras

from tftransfer.defaults import BUNDLED_BASE
from tftransfer.errors import TransferError
from tftransfer.models import hub
from tftransfer.models.features import Base, add_taps, assemble_features
from tftransfer.models.saving import load_model


def _bundled_models_dir():
    # An installed wheel carries the bundled base inside the package; an
    # editable install or a checkout reads the repository's saved_models/.
    package = Path(__file__).resolve().parents[1]
    installed = package / "saved_models"
    if installed.is_dir():
        return installed
    return package.parent / "saved_models"


#: Where the bundled base lives (`$TFTRANSFER_SAVED_MODELS` overrides it).
SAVED_MODELS_DIR = Path(os.environ.get("TFTRANSFER_SAVED_MODELS") or _bundled_models_dir())

#: The MobileNetV2 layer where the bundled base ends.
BUNDLED_OUTPUT_LAYER = "block_6_expand_relu"

# The `weights` default: "whatever the registry entry says".
DEFAULT = "default"

@dataclasses.dataclass(frozen=True)
class BaseSpec:
    """A registry entry: how to build one named base.

    Attributes:
        name: The registry name, e.g. `"mobilenet_v2"`.
        build: `build(input_shape, weights)` returns a Keras model whose
            output is a feature vector (or a feature map, which is pooled);
            `None` for a TF Hub module, whose handle is `default_weights`.
        input_size: The default square input size in pixels.
        preprocessing: A `Preprocess` mode.
        default_weights: What `weights="default"` means: `"imagenet"`, `None`,
            or a path to a weights file.
        description: One line for `tftransfer bases`.
        taps: Names of inner layers whose pooled outputs are appended to
            the features by default (see `features.add_taps`).
    """

    name: str
    build: Callable[..., keras.Model]
    input_size: int
    preprocessing: str
    default_weights: Optional[str] = "imagenet"
    description: str = ""
    taps: tuple = ()


_REGISTRY: dict[str, BaseSpec] = {}


def register_base(name: str, build: Callable, input_size: int, preprocessing: str,
                  default_weights: Optional[str] = "imagenet", description: str = "",
                  taps: Sequence[str] = ()) -> "BaseSpec":
    """Adds a named base to the registry.

    Args:
        name: The name `load_base` will accept.
        build: `build(input_shape, weights) -> keras.Model`, returning
            features (a vector or a map) for `input_shape` images.
        input_size: The default square input size.
        preprocessing: A `Preprocess` mode.
        default_weights: `"imagenet"`, `None` or a weights file path.
        description: One line shown by `tftransfer bases`.
        taps: Inner layers whose pooled outputs `load_base` appends to the
            features by default (see `features.add_taps`).

    Returns:
        The new `BaseSpec`.
    """
    if name in _REGISTRY:
        raise TransferError(f"a base named {name!r} is already registered")
    spec = BaseSpec(name, build, input_size, preprocessing, default_weights,
                    description, tuple(taps))
    _REGISTRY[name] = spec
    return spec


def list_bases() -> list:
    """Returns every registered `BaseSpec`, sorted by name.

    Example:
    >>> [spec.name for spec in list_bases()][:2]
    ['convnext_base', 'convnext_large']
    """
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_base_spec(name):
    """Returns the `BaseSpec` registered as `name`, or raises a `TransferError`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise TransferError(
            f"unknown base {name!r}; run `tftransfer bases` to list the "
            "registered names, or pass a .keras file or SavedModel directory"
        ) from None


def _keras_application(constructor, output_layer=None, **kwargs):
    def build(input_shape, weights):
        local = weights not in (None, "imagenet")
        model = constructor(include_top=False, weights=None if local else weights,
                            input_shape=input_shape,
                            pooling=None if output_layer else "avg", **kwargs)
        if output_layer is not None:
            model = keras.Model(model.input, model.get_layer(output_layer).output,
                                name=f"{model.name}_to_{output_layer}")
        if local:
            # A local file holds the weights of the backbone as built here,
            # as `base.backbone.save_weights` writes them.
            model.load_weights(weights)
        return model

    return build


# name, keras.applications constructor, default input size, preprocessing.
# Families whose models rescale their own input take "none".
_KERAS_APPLICATIONS = [
    ("convnext_tiny", "ConvNeXtTiny", 224, "none"),
    ("convnext_small", "ConvNeXtSmall", 224, "none"),
    ("convnext_base", "ConvNeXtBase", 224, "none"),
    ("convnext_large", "ConvNeXtLarge", 224, "none"),
    ("convnext_xlarge", "ConvNeXtXLarge", 224, "none"),
    ("densenet121", "DenseNet121", 224, "torch"),
    ("densenet169", "DenseNet169", 224, "torch"),
    ("densenet201", "DenseNet201", 224, "torch"),
    ("efficientnet_b0", "EfficientNetB0", 224, "none"),
    ("efficientnet_b1", "EfficientNetB1", 240, "none"),
    ("efficientnet_b2", "EfficientNetB2", 260, "none"),
    ("efficientnet_b3", "EfficientNetB3", 300, "none"),
    ("efficientnet_b4", "EfficientNetB4", 380, "none"),
    ("efficientnet_b5", "EfficientNetB5", 456, "none"),
    ("efficientnet_b6", "EfficientNetB6", 528, "none"),
    ("efficientnet_b7", "EfficientNetB7", 600, "none"),
    ("efficientnet_v2_b0", "EfficientNetV2B0", 224, "none"),
    ("efficientnet_v2_b1", "EfficientNetV2B1", 240, "none"),
    ("efficientnet_v2_b2", "EfficientNetV2B2", 260, "none"),
    ("efficientnet_v2_b3", "EfficientNetV2B3", 300, "none"),
    ("efficientnet_v2_s", "EfficientNetV2S", 384, "none"),
    ("efficientnet_v2_m", "EfficientNetV2M", 480, "none"),
    ("efficientnet_v2_l", "EfficientNetV2L", 480, "none"),
    ("inception_v3", "InceptionV3", 299, "tf"),
    ("inception_resnet_v2", "InceptionResNetV2", 299, "tf"),
    ("mobilenet", "MobileNet", 224, "tf"),
    ("mobilenet_v2", "MobileNetV2", 224, "tf"),
    ("mobilenet_v3_small", "MobileNetV3Small", 224, "none"),
    ("mobilenet_v3_large", "MobileNetV3Large", 224, "none"),
    ("nasnet_mobile", "NASNetMobile", 224, "tf"),
    ("nasnet_large", "NASNetLarge", 331, "tf"),
    ("resnet50", "ResNet50", 224, "caffe"),
    ("resnet101", "ResNet101", 224, "caffe"),
    ("resnet152", "ResNet152", 224, "caffe"),
    ("resnet50_v2", "ResNet50V2", 224, "tf"),
    ("resnet101_v2", "ResNet101V2", 224, "tf"),
    ("resnet152_v2", "ResNet152V2", 224, "tf"),
    ("vgg16", "VGG16", 224, "caffe"),
    ("vgg19", "VGG19", 224, "caffe"),
    ("xception", "Xception", 299, "tf"),
]

# Inner layers whose pooled outputs join the features by default, where a
# measurement showed them paying (docs/bases.md#taps-features-from-inside-the-base);
# the other families are not measured yet.
_TAPS = {"mobilenet_v2": ("block_14_add",)}

for _name, _constructor, _size, _mode in _KERAS_APPLICATIONS:
    register_base(_name, _keras_application(getattr(keras.applications, _constructor)),
                  _size, _mode, description=f"keras.applications.{_constructor}",
                  taps=_TAPS.get(_name, ()))

# TF Hub image feature-vector modules: name, handle, input size. All take
# [0, 1] pixels ("unit"). `weights` may name a local copy of the module.
_HUB_MODULES = [
    ("hub_mobilenet_v2_100_224",
     "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5", 224),
    ("hub_mobilenet_v3_small_100_224",
     "https://tfhub.dev/google/imagenet/mobilenet_v3_small_100_224/feature_vector/5", 224),
    ("hub_mobilenet_v3_large_100_224",
     "https://tfhub.dev/google/imagenet/mobilenet_v3_large_100_224/feature_vector/5", 224),
    ("hub_efficientnet_v2_b0",
     "https://tfhub.dev/google/imagenet/efficientnet_v2_imagenet1k_b0/feature_vector/2",
     224),
    ("hub_efficientnet_v2_s_21k",
     "https://tfhub.dev/google/imagenet/efficientnet_v2_imagenet21k_s/feature_vector/2",
     384),
    ("hub_inception_v3",
     "https://tfhub.dev/google/imagenet/inception_v3/feature_vector/5", 299),
    ("hub_resnet_v2_50",
     "https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/5", 224),
    ("hub_bit_s_r50x1", "https://tfhub.dev/google/bit/s-r50x1/1", 224),
    ("hub_bit_m_r50x1", "https://tfhub.dev/google/bit/m-r50x1/1", 224),
]

for _name, _handle, _size in _HUB_MODULES:
    # `build=None`: `load_base` loads the handle (or a local copy) as a module.
    register_base(_name, None, _size, "unit", default_weights=_handle,
                  description=f"TF Hub: {_handle.split('tfhub.dev/')[-1]}")

# The project's own base: MobileNetV2 (alpha 0.35) pretrained by
# scripts/pretrain_bundled_base.py on Fashion-MNIST classes 0-4. Its top
# blocks specialise in those five classes; the features of block 6 transfer
# far better to unseen classes (see `tftransfer compare` in docs/benchmarks.md).
register_base(
    BUNDLED_BASE,
    _keras_application(keras.applications.MobileNetV2, alpha=0.35,
                       output_layer=BUNDLED_OUTPUT_LAYER),
    input_size=48,
    preprocessing="tf",
    default_weights=str(SAVED_MODELS_DIR / f"{BUNDLED_BASE}.weights.h5"),
    description="bundled: MobileNetV2-0.35 pretrained on Fashion-MNIST 0-4",
)


def load_base(spec: str, weights: Optional[str] = DEFAULT, *,
              input_size: Optional[Sequence[int]] = None, preprocessing: Optional[str] = None,
              taps: Union[str, Sequence[str], None] = DEFAULT) -> Base:
    """Loads a pretrained base.

    Args:
        spec: A registry name (see `list_bases()`), a local `.keras` file
            whose output is a feature vector or map, or a SavedModel
            directory.
        weights: `"imagenet"`, `None` (random initialisation), a local
            weights file, or `"default"` for the registry entry's own.
        input_size: An int or `(height, width)`; defaults to the base's own.
        preprocessing: A `Preprocess` mode; defaults to the registry entry's,
            or `"none"` for a file.
        taps: Names of inner layers whose pooled outputs are appended to
            the features (see `features.add_taps`); `"default"`: the
            registry entry's (`BaseSpec.taps`), none for a file or module.

    Returns:
        A `Base`.

    Example:
    >>> base = load_base("mobilenet_v2", weights=None, input_size=160)
    >>> base.input_size, base.feature_dim
    ((160, 160), 1440)
    >>> load_base("mobilenet_v2", weights=None, input_size=160, taps=()).feature_dim
    1280
    """
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if taps is None:
        taps = ()
    elif isinstance(taps, str) and taps != DEFAULT:
        taps = (taps,)  # One layer name, not a sequence of letters.
    spec = str(spec)
    if spec.endswith(".keras"):
        return _load_keras_file(Path(spec), input_size, preprocessing,
                                () if taps == DEFAULT else taps)
    if Path(spec).is_dir() or "://" in spec:
        _refuse_taps(spec, taps)
        return hub.load_hub_base(spec, input_size=input_size,
                                 preprocessing=preprocessing)
    if "/" in spec or spec.startswith("."):
        raise TransferError(f"base not found: {spec} does not exist")
    entry = get_base_spec(spec)
    input_size = tuple(input_size or (entry.input_size, entry.input_size))
    preprocessing = preprocessing or entry.preprocessing
    if entry.build is None:  # A TF Hub module; `weights` may be a local copy.
        _refuse_taps(entry.name, taps)
        handle = entry.default_weights if weights in (DEFAULT, "imagenet") else weights
        if handle is None:
            raise TransferError(f"{entry.name!r} is a TF Hub module; it has no "
                                "random initialisation (weights=None)")
        base = hub.load_hub_base(handle, input_size=input_size,
                                 preprocessing=preprocessing)
        return dataclasses.replace(base, name=entry.name)
    if weights == DEFAULT:
        weights = entry.default_weights
    # Tapped after the weights are loaded: a weights file holds the backbone
    # as the entry builds it.
    backbone = add_taps(_build_backbone(entry, (*input_size, 3), weights),
                        entry.taps if taps == DEFAULT else taps)
    return Base(entry.name, assemble_features(backbone, input_size, preprocessing),
                input_size, preprocessing)


def _refuse_taps(spec, taps):
    if taps != DEFAULT and tuple(taps):
        raise TransferError(f"{spec!r} is a TF Hub module, which runs only as a whole; "
                            "it has no inner layers to tap")


def _build_backbone(entry, input_shape, weights):
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise TransferError(f"weights file not found: {weights}")
    try:
        return entry.build(input_shape, weights)
    except ValueError as error:
        raise TransferError(f"cannot build base {entry.name!r} at input shape "
                            f"{input_shape}: {error}") from None
    except Exception as error:  # Downloads fail with several error types.
        if weights != "imagenet":
            raise
        raise TransferError(
            f"could not download the ImageNet weights of {entry.name!r} "
            f"({type(error).__name__}: {error}). Without internet, copy the "
            "weights file into ~/.keras/models/ or pass weights=None or a "
            "local weights file") from None


def _load_keras_file(path, input_size, preprocessing, taps):
    if not path.is_file():
        raise TransferError(f"base not found: {path} does not exist")
    model = load_model(path)
    size = tuple(model.input_shape[1:3])
    if input_size and tuple(input_size) != size:
        raise TransferError(f"{path} takes {size[0]}x{size[1]} images; it "
                            f"cannot be loaded at {input_size[0]}x{input_size[1]}")
    preprocessing = preprocessing or "none"
    return Base(str(path), assemble_features(add_taps(model, taps), size, preprocessing),
                size, preprocessing)
