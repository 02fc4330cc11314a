"""The defaults and limits that the command line shows, without TensorFlow.

Each value is defined here once and imported by the module that uses it, so
that `tftransfer --help` (and every command's) reads them without loading
TensorFlow, which takes seconds.
"""

#: The most pixels (width x height, times the frames of a GIF) that an image
#: may have to be decoded, in training, `predict`, `evaluate` and the exported
#: `serving_default` signature: 200 million need 600 MB as RGB, and a larger
#: image would need gigabytes. `export_saved_model(max_pixels=...)` sets the
#: export's own limit.
MAX_PIXELS = 200_000_000
#: Images per batch (per replica, under a strategy), in the loaders and the CLI.
#: Small, because a few hundred images give few steps per epoch.
DEFAULT_BATCH_SIZE = 16
#: The name of the base that ships with the project.
BUNDLED_BASE = "fashion_mobilenet_v2"
#: What `--strategy` and `--precision` take (`tftransfer.training.distribute`).
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
#: The TFLite variants `export_tflite` writes.
TFLITE_QUANTIZATIONS = ("float32", "float16", "dynamic_range", "int8")
#: The `unfreeze` that trains no backbone layer: the head alone.
NO_UNFREEZE = "none"
#: How many classes `predict` answers with, `evaluate`'s top-k accuracy and
#: the exported SavedModel's `classes` output: one k everywhere.
TOP_K = 5
