"""The unfreeze boundary: a classifier split where the frozen part of its base ends.

While phase 2 trains the top of a base, every epoch sends every image
through the frozen layers below and gets the same activations as the epoch
before (frozen BatchNorm runs in inference mode). `split_at` cuts the
classifier there: `bottom` computes the tensors that cross the cut once, and
`trainer` runs only the layers that train. A cut inside a residual block is
crossed by more than one tensor; each of them is an input of `trainer`.

Both parts share their layers with the classifier, so training `trainer`
trains the classifier itself, which stays the normal full `keras.Model`.
"""

import dataclasses

import keras
from keras import tree

from tftransfer.models.builder import backbone_layers, head_of
from tftransfer.models.features import Preprocess, find_backbone, is_module_backbone


@dataclasses.dataclass
class Split:
    """A classifier cut at its unfreeze boundary.

    Attributes:
        bottom: A `keras.Model` from images (RGB `[0, 255]`, after any
            augmentation) to the tensors that cross the cut: the frozen part.
        trainer: A `keras.Model` from those tensors to the class
            probabilities: the layers that train, then pooling and the head.
        crossing: The number of tensors that cross the cut.
        top_features: `trainer` without the head: from the crossing tensors
            to the features that the head reads. Over cached `bottom`
            outputs it gives phase 1 its features without a second pass of
            the base.
    """

    bottom: keras.Model
    trainer: keras.Model
    crossing: int
    top_features: keras.Model


def split_at(model, unfreeze_count):
    """Cuts a classifier where the frozen part of its backbone ends.

    Args:
        model: A classifier from `build_classifier`.
        unfreeze_count: How many of the backbone's top layers train (as
            `set_trainable` returns it).

    Returns:
        `(split, None)`, or `(None, reason)` when the classifier cannot be
        cut there (a TF Hub module, the whole base unfrozen).
    """
    if is_module_backbone(model):
        return None, ("a TF Hub module runs only as a whole, so the top phase runs through "
                      "it every epoch")
    backbone, layers = find_backbone(model), backbone_layers(model)
    if not 0 < unfreeze_count < len(layers):
        return None, "the whole base trains; nothing below the unfrozen layers is fixed"
    crossing = _crossing_tensors(backbone, layers[len(layers) - unfreeze_count:])
    not_functional = f"the base {backbone.name!r} is not a functional model of one input"
    if crossing is None:
        return None, not_functional
    try:
        return _cut(model, backbone, crossing), None
    except ValueError as error:
        # Keras refuses a model whose outputs its inputs do not reach: the
        # layers' tensors are not the backbone's own graph (a Sequential).
        return None, f"{not_functional} that can be cut there ({error})"


def _cut(model, backbone, crossing):
    """The `Split` of a classifier whose backbone is crossed by `crossing`."""
    features = model.get_layer("features")
    preprocess = next(layer for layer in features.layers if isinstance(layer, Preprocess))
    bottom_backbone = keras.Model(backbone.inputs, crossing, name="frozen_bottom")
    images = keras.Input(model.input_shape[1:], name="image")
    bottom = keras.Model(images, bottom_backbone(preprocess(images)), name="bottom")

    # One tensor each, not a list of one: layers such as pooling take either.
    top_backbone = keras.Model(crossing if len(crossing) > 1 else crossing[0],
                               backbone.output, name="trained_top")
    inputs = [keras.Input(tuple(t.shape[1:]), name=f"crossing_{i}")
              for i, t in enumerate(crossing)]
    x = top_backbone(inputs if len(inputs) > 1 else inputs[0])
    pool = _pooling_of(features)
    if pool is not None:
        x = pool(x)
    top_features = keras.Model(inputs, x, name="top_features")
    trainer = keras.Model(inputs, head_of(model)(x), name="trainer")
    return Split(bottom, trainer, len(crossing), top_features)


def _crossing_tensors(backbone, top_layers):
    """The tensors made below the cut (or the input) that the top layers read.

    `None` if the backbone is not a functional graph of one input, where
    `layer.input` names no tensor of it (a subclassed model).
    """
    try:
        if len(backbone.inputs) != 1:
            return None
        # `layer.input`/`.output` are the tensors of the layer's first call,
        # which is the backbone's own graph: the splits below reuse its
        # tensors and call no layer again.
        made_on_top = {id(t) for layer in top_layers for t in tree.flatten(layer.output)}
        read_on_top = [t for layer in top_layers for t in tree.flatten(layer.input)]
    except (AttributeError, ValueError, TypeError):
        return None
    crossing, seen = [], set()
    for tensor in read_on_top:
        if id(tensor) not in made_on_top and id(tensor) not in seen:
            seen.add(id(tensor))
            crossing.append(tensor)
    return crossing


def _pooling_of(features):
    try:
        return features.get_layer("pool")
    except ValueError:
        return None
