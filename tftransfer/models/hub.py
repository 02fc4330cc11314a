"""TF Hub bases in Keras 3: `HubModule`, a Keras 3 layer around a SavedModel.

`tensorflow_hub.KerasLayer` is a tf_keras layer, which Keras 3 models
reject. `HubModule` is a real `keras.layers.Layer`: the module's own
`tf.Variable`s become its weights (Keras variables adopt them, so the
optimizer updates exactly what the module computes with), `training`
reaches the module, and the module's regularization losses are added while
it trains.

Modules that only have signatures (the TF1 hub format, or a plain
`serving_default` export) load as frozen feature extractors.
"""

import hashlib
import os
import re
import socket
import urllib.parse
from pathlib import Path

import keras
import tensorflow as tf

from tftransfer.errors import TransferError
from tftransfer.models.features import Base, assemble_features

# The scale and offset of a BatchNorm layer, by the names that Keras
# (`bn_Conv1/gamma`, `block_1_expand_BN/beta`, `batch_normalization/gamma`)
# and TF-Slim (`BatchNorm/beta`) give them.
_BATCH_NORM_PARAMETER = re.compile(
    r"(batch_?norm|(^|[/_])bn([/_]|$))[^:]*(gamma|beta)", re.IGNORECASE)

# Hub image feature-vector modules take float pixels in [0, 1].
HUB_PREPROCESSING = "unit"
_DEFAULT_SIZE = 224


@keras.saving.register_keras_serializable(package="tftransfer")
class HubModule(keras.layers.Layer):
    """A TF2 SavedModel (TF Hub module) as a fine-tunable Keras 3 layer.

    Args:
        handle: A local SavedModel directory, a tfhub.dev or Kaggle URL, or a
            `gs://` path (see `resolve_handle`).
        output_key: For modules that return a dict, the output to use.
        signature: Call this signature instead of the module's `__call__`;
            such a module is always frozen.
        trainable: Whether fine-tuning updates the module's variables.
        module_training: Whether Keras' `training=True` reaches the module
            while it is fine-tuned. `False` (the default) runs the module in
            inference mode, as tftransfer runs the BatchNorm layers of Keras
            bases: its BatchNorm uses and keeps the pretrained statistics and
            its own dropout is off, while its variables still train. `True`
            forwards `training`, as `hub.KerasLayer` does: BatchNorm
            normalizes by batch statistics and updates its moving averages.
            A frozen module always runs in inference mode. In inference mode
            the BatchNorm scales and offsets (variables named like
            `..._bn/gamma`, `BatchNorm/beta`) stay frozen too, as whole
            BatchNorm layers do in Keras bases.
        unfrozen_variables: Train only the last N of
            `fine_tunable_variables` (the top of the network, for modules
            that list their variables in creation order); `None` trains all.

    Example:
    >>> layer = HubModule("saved_models/fashion_mobilenet_v2_hub")
    >>> layer(keras.ops.zeros((1, 48, 48, 3))).shape
    TensorShape([1, 96])
    """

    def __init__(self, handle, output_key=None, signature=None, trainable=False,
                 module_training=False, unfrozen_variables=None, **kwargs):
        # The module's signature is float32; under a mixed policy Keras would
        # cast the images to float16 before `call` sees them (hub#748).
        kwargs.setdefault("dtype", "float32")
        super().__init__(trainable=trainable, **kwargs)
        self.handle = str(handle)
        self.output_key = output_key
        self._module_training = bool(module_training)
        self.signature = signature
        self._module = _load_module(resolve_handle(self.handle))
        if signature is None and not callable(self._module):
            signature = _default_signature(self._module, self.handle)
            self.signature = signature
        if signature is not None:
            if signature not in self._module.signatures:
                raise TransferError(
                    f"{self.handle} has no signature {signature!r}; it has "
                    f"{sorted(self._module.signatures)}")
            self._function = self._module.signatures[signature]
        else:
            self._function = self._module.__call__
        self._accepts_training = signature is None and _accepts_training(self._function)
        # Keras variables that adopt the module's tf.Variables (no copy).
        # Keras names may not hold "/" or ":" (the ":0" of TF names).
        variables = _module_variables(self._module, self._function)
        self._trainable_in_module = [v.trainable for v in variables]
        self._unfrozen_variables = None
        self._batch_norm = [bool(_BATCH_NORM_PARAMETER.search(v.name)) for v in variables]
        self._module_variables = [
            keras.Variable(v, trainable=v.trainable, name=re.sub(r"[/:]", "_", v.name))
            for v in variables
        ]
        type(self).trainable.fset(self, trainable)  # `self.trainable = ` may be skipped.
        if unfrozen_variables is not None:
            self.unfrozen_variables = unfrozen_variables
        self.built = True

    @property
    def fine_tunable(self):
        """Whether the module can be trained (it is a TF2 `__call__` module)."""
        return self.signature is None

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        if value and getattr(self, "_function", None) is not None and not self.fine_tunable:
            raise TransferError(
                f"{self.handle} has only signatures (TF1 hub format or a "
                "serving export); it can be used frozen, not fine-tuned")
        self._trainable = bool(value)
        self._update_variable_flags()

    @property
    def module_training(self):
        """Whether `training=True` reaches the module (see the class docs)."""
        return self._module_training

    @module_training.setter
    def module_training(self, value):
        self._module_training = bool(value)
        self._update_variable_flags()

    @property
    def fine_tunable_variables(self):
        """The variables that fine-tuning may train, in the module's order.

        That order is the module's own (`trainable_variables`, else
        `variables`): creation order for modules exported from Keras or
        TF-Slim, so the last ones are the top of the network. The module's
        non-trainable state (BatchNorm statistics) is left out, and so are
        BatchNorm scales and offsets while the module runs in inference mode.
        """
        return [v for v, own, batch_norm in zip(self._module_variables,
                                                self._trainable_in_module, self._batch_norm)
                if own and (self._module_training or not batch_norm)]

    @property
    def unfrozen_variables(self):
        """How many of `fine_tunable_variables`, the last ones, train; `None`: all."""
        return self._unfrozen_variables

    @unfrozen_variables.setter
    def unfrozen_variables(self, count):
        candidates = len(self.fine_tunable_variables)
        if count is not None and not 0 < int(count) <= candidates:
            raise TransferError(f"cannot unfreeze {count} variables: the TF Hub module "
                                f"{self.handle} has {candidates} that can train")
        self._unfrozen_variables = None if count is None else int(count)
        self._update_variable_flags()

    def _update_variable_flags(self):
        # Models collect weights by each variable's own flag, so keep the
        # flags in step.
        if not hasattr(self, "_module_variables"):
            return
        candidates = self.fine_tunable_variables
        top = candidates[len(candidates) - (self._unfrozen_variables or len(candidates)):]
        chosen = {id(v) for v in top}
        for variable in self._module_variables:
            variable.trainable = self._trainable and id(variable) in chosen

    def input_size(self):
        """Returns the fixed `(height, width)` of the module's input, or `None`."""
        for spec in _input_specs(self._function):
            if spec.shape.rank == 4 and None not in spec.shape[1:3]:
                return tuple(int(d) for d in spec.shape[1:3])
        return None

    def call(self, images, training=False):
        images = tf.cast(images, tf.float32)
        if self._accepts_training:
            outputs = self._function(
                images, training=bool(training) and self.trainable and self.module_training)
        else:
            outputs = self._function(images)
        if training and self.trainable:
            for loss in getattr(self._module, "regularization_losses", []):
                self.add_loss(loss())
        if isinstance(outputs, dict):
            if self.output_key is None and len(outputs) == 1:
                return next(iter(outputs.values()))
            if self.output_key not in outputs:
                raise TransferError(f"{self.handle} returns {sorted(outputs)}; pass "
                                    "output_key to pick one")
            return outputs[self.output_key]
        return outputs

    def compute_output_spec(self, images, training=False):
        # Shape inference runs the module once on a symbolic placeholder.
        concrete = tf.function(self.call).get_concrete_function(
            tf.TensorSpec(images.shape, tf.float32))
        return keras.KerasTensor(tuple(concrete.structured_outputs.shape.as_list()),
                                 dtype="float32")

    @classmethod
    def from_config(cls, config):
        """Builds the layer from a model file's config, unless Keras is in safe mode.

        A model file names its module's handle, a URL to fetch or a folder
        whose SavedModel graph runs here: as much power as Keras's own
        `TFSMLayer`, which safe mode refuses too. So the handle is named
        and refused before anything is fetched or loaded, unless the file
        is trusted: `keras.saving.load_model(path, safe_mode=False)`, or
        the CLI's `--trust-model`.
        """
        if _in_safe_mode():
            raise ValueError(
                f"{UNTRUSTED_MODULE}: the model file names the TF Hub module "
                f"{config.get('handle')!r}, which would be fetched or loaded and run; if "
                "you trust the file, load it with safe_mode=False (CLI: --trust-model)")
        return cls(**config)

    def get_config(self):
        return {**super().get_config(), "handle": self.handle,
                "output_key": self.output_key, "signature": self.signature,
                "module_training": self.module_training,
                "unfrozen_variables": self.unfrozen_variables}


#: The start of the error that refuses a hub module in an untrusted model file.
UNTRUSTED_MODULE = "refused to load a TF Hub module in safe mode"


def _in_safe_mode():
    """Whether Keras is deserializing in safe mode (its default), as `TFSMLayer` asks.

    Keras has no public getter for the flag that `load_model(safe_mode=...)`
    and `keras.config.enable_unsafe_deserialization()` set; this reads it
    where Keras keeps it, and if that moves, answers `True`: refusing a
    module that the user trusts is the safe mistake, and the error says how
    to trust it.
    """
    try:
        from keras.src.saving.serialization_lib import in_safe_mode
    except ImportError:
        return True
    return in_safe_mode() is not False


def load_hub_base(handle, *, input_size=None, preprocessing=None, output_key=None):
    """Loads a TF Hub feature-vector module as a `Base`.

    Args:
        handle: A local SavedModel directory, a tfhub.dev / Kaggle URL or a
            `gs://` path.
        input_size: `(height, width)`; required if the module's input size
            is dynamic (224x224 is assumed otherwise).
        preprocessing: A `Preprocess` mode; hub image modules take `[0, 1]`
            (`"unit"`), the default.
        output_key: For modules that return a dict.

    Returns:
        A `Base` whose backbone is a `HubModule`.
    """

    layer = HubModule(handle, output_key=output_key, name="hub_module")
    fixed = layer.input_size()
    if fixed and input_size and tuple(input_size) != fixed:
        raise TransferError(f"{handle} takes {fixed[0]}x{fixed[1]} images; it cannot "
                            f"run at {input_size[0]}x{input_size[1]}")
    size = tuple(input_size or fixed or (_DEFAULT_SIZE, _DEFAULT_SIZE))
    preprocessing = preprocessing or HUB_PREPROCESSING
    return Base(str(handle), assemble_features(layer, size, preprocessing), size,
                preprocessing)


def resolve_handle(handle, timeout=5.0):
    """Returns a local directory for a module handle, failing fast offline.

    Local directories are returned as they are. A URL resolves to its copy
    in `TFHUB_CACHE_DIR` (`tensorflow_hub`'s cache: the folder named by the
    SHA-1 of the handle) when one is there, with no network. Otherwise the
    host is probed with a short timeout before `tensorflow_hub` downloads,
    so an unreachable handle fails in seconds rather than retrying.

    Args:
        handle: A path, `gs://` path, or http(s) URL.
        timeout: Seconds to wait for the host to answer.

    Returns:
        The path of the module's SavedModel directory.
    """
    if Path(handle).is_dir():
        return handle
    if handle.startswith("http://"):
        # A module is a graph that runs: one fetched in the clear could be
        # swapped on the way.
        raise TransferError(f"{handle}: a module is fetched over https:// only (a graph "
                            "that runs could be changed in transit over plain http); use "
                            "the https:// address, or download it and pass its folder")
    if not re.match(r"^(https?|gs)://", handle):
        raise TransferError(f"module not found: {handle} is neither a directory nor "
                            "a URL")
    cached = cached_module_dir(handle)
    if cached and cached.is_dir() and any(cached.iterdir()):
        return str(cached)
    if handle.startswith(("http://", "https://")):
        _probe(handle, timeout)
    elif handle.startswith("gs://"):
        # TensorFlow's GCS client retries with backoff; fail fast instead.
        _probe(f"https://{GCS_HOST}", timeout, handle=handle)
    import tensorflow_hub as hub

    try:
        return hub.resolve(handle)
    except Exception as error:  # urllib, HTTP and tf.errors alike.
        raise _unreachable(handle, error) from None


def cached_module_dir(handle):
    """Returns where `tensorflow_hub` caches `handle`, or `None` if no cache is set."""
    cache = os.environ.get("TFHUB_CACHE_DIR")
    if not cache:
        return None
    return Path(cache) / hashlib.sha1(handle.encode("utf8")).hexdigest()


# Where gs:// handles are read from (a constant, so that tests can aim it
# at a closed local port).
GCS_HOST = "storage.googleapis.com"


def _probe(url, timeout, handle=None):
    parts = urllib.parse.urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise _unreachable(handle or url, error) from None


def _unreachable(handle, error):
    where = cached_module_dir(handle)
    hint = (f"put the unpacked module in {where}" if where else
            "set TFHUB_CACHE_DIR and put the unpacked module in "
            "$TFHUB_CACHE_DIR/<sha1 of the handle>")
    return TransferError(f"cannot reach {handle} ({error}). Offline, {hint}, or "
                         "pass the module's local directory as the base")


def _load_module(path):
    try:
        if tf.config.list_logical_devices("TPU"):
            # On TPU hosts, variables must be read by the local host (hub#771).
            options = tf.saved_model.LoadOptions(experimental_io_device="/job:localhost")
            return tf.saved_model.load(path, options=options)
        return tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise TransferError(f"cannot load a SavedModel from {path}: {error}") from None


def _default_signature(module, handle):
    for name in ("default", "serving_default"):
        if name in getattr(module, "signatures", {}):
            return name
    raise TransferError(f"{handle} is neither callable nor has a default or "
                        "serving_default signature")


def _accepts_training(function):
    try:
        spec = function.function_spec.fullargspec
        return "training" in spec.args or "training" in spec.kwonlyargs
    except AttributeError:
        concrete = getattr(function, "concrete_functions", [])
        return any("training" in c.structured_input_signature[1] for c in concrete)


def _input_specs(function):
    concrete = list(getattr(function, "concrete_functions", [function]))
    for fn in concrete:
        args, kwargs = fn.structured_input_signature
        for spec in tf.nest.flatten((args, kwargs)):
            if isinstance(spec, tf.TensorSpec):
                yield spec


def _module_variables(module, function):
    # The trainable ones first, in the order the module lists them.
    variables = [*(getattr(module, "trainable_variables", []) or []),
                 *(getattr(module, "variables", []) or [])]
    if not variables:
        variables = list(getattr(function, "variables", []) or [])
    seen, unique = set(), []
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            unique.append(variable)
    return unique


def save_hub_module(base, directory):
    """Writes a base as a TF2 reusable SavedModel, in TF Hub's format.

    The module takes float images in `[0, 1]` (the TF Hub convention) at
    the base's input size and returns its feature vectors. It has
    `__call__(images, training)`, `variables`, `trainable_variables` and
    `regularization_losses`, so `HubModule` (and `hub.KerasLayer`) can
    fine-tune it.

    Args:
        base: A `Base`.
        directory: Where to write the SavedModel.

    Returns:
        The directory, as a `Path`.
    """
    features = base.features
    spec = tf.TensorSpec([None, *base.input_size, 3], tf.float32)

    @tf.function
    def call(images, training=False):
        return features(images * 255.0, training=training)

    call.get_concrete_function(spec, True)
    call.get_concrete_function(spec, False)
    module = tf.train.Checkpoint()
    module.__call__ = call
    module.variables = [v.value for v in features.weights]
    module.trainable_variables = [v.value for v in features.trainable_weights]
    module.regularization_losses = []
    tf.saved_model.save(module, str(directory))
    return Path(directory)
