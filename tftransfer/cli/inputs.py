"""What several commands read from their arguments: the base and data, the feature
cache, and the class names beside a saved model."""

import contextlib
import tempfile
from pathlib import Path

from tftransfer.cli.arguments import data_options


def base_option(args, strategy=None):
    """Loads `--base` with `--weights` (`none`: random), `--image-size` and `--taps`.

    Args:
        args: The parsed arguments.
        strategy: The `tf.distribute` strategy whose scope builds the base,
            or `None` for the current one.

    Returns:
        The `Base`.
    """
    from tftransfer.models.bases import load_base

    weights = None if args.weights.lower() == "none" else args.weights
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        return load_base(args.base, weights=weights, input_size=args.image_size,
                         taps=args.taps)


def base_and_data(args, strategy):
    """Loads `--base` and `--data` (seeded by `--seed`) for `train`, `lr-find` and `compare`.

    Args:
        args: The parsed arguments.
        strategy: The `tf.distribute` strategy whose scope builds the base
            and whose replicas the batch is split over.

    Returns:
        `(base, data)`: the `Base` and the `DataSplits`.
    """
    import keras

    import tftransfer
    from tftransfer.training import distribute

    keras.utils.set_random_seed(args.seed)
    base = base_option(args, strategy)
    batch_size = distribute.global_batch_size(args.batch_size, strategy)
    data = tftransfer.load_data(args.data, base.input_size, batch_size=batch_size,
                                **data_options(args))
    kind = "labels (multi-label)" if data.multi_label else "classes"
    print(f"data: {len(data.class_names)} {kind} from {args.data}"
          + (f", {len(data.skipped)} file(s) skipped (see above)" if data.skipped else ""))
    return base, data


def feature_cache_option(args):
    """`--feature-cache` as `RunOptions.feature_cache` takes it.

    Args:
        args: The parsed arguments.

    Returns:
        `True` (the default folder), `False` (`none`) or the folder given.
    """
    return {"default": True, "none": False}.get(args.feature_cache, args.feature_cache)


@contextlib.contextmanager
def features_read_from_cache(args):
    """The cache folder of a command that reads features from a cache (lr-find, audit).

    Args:
        args: The parsed arguments.

    Yields:
        `None` (the default folder) or `--feature-cache DIR`; with
        `--feature-cache none`, a folder that goes when the command ends.
    """
    cache = feature_cache_option(args)
    if cache is False:
        with tempfile.TemporaryDirectory(prefix="tftransfer-features-") as folder:
            yield folder
    else:
        yield None if cache is True else cache


def labels_beside(model_file):
    """Where the class names of a saved `.keras` model are written and read.

    Args:
        model_file: The `.keras` file, `m.keras`.

    Returns:
        The `Path` `m.labels.txt` beside it (the class names in output order).
    """
    return Path(model_file).with_suffix(".labels.txt")
