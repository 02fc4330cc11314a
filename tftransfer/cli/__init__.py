"""The `tftransfer` command line.

    tftransfer train                 # the bundled demo, no download needed
    tftransfer train --data photos/ --base efficientnet_v2_b0 --export exports/photos
    tftransfer export --model photos.keras --export exports/photos --data photos/ --tflite all
    tftransfer predict --model exports/photos cat.jpg dog.png
    tftransfer check-data photos/
    tftransfer bases
    tftransfer clear-cache
    tftransfer lr-find --data photos/
    tftransfer evaluate --model exports/photos --data photos/
    tftransfer compare --data photos/ --base efficientnet_v2_b0
"""

import argparse
import contextlib
import logging
import os
import sys

from tftransfer.cli import arguments, commands, train
from tftransfer.cli.arguments import DEFAULT_EXPORT, DEMO_DATA, checked_option
from tftransfer.errors import TransferError

__all__ = ["DEFAULT_EXPORT", "DEMO_DATA", "build_parser", "main"]


def build_parser():
    """Returns the `argparse` parser of the `tftransfer` command."""
    from tftransfer import __version__

    parser = argparse.ArgumentParser(
        prog="tftransfer",
        description="Transfer learning for Keras 3: a pretrained base, a new softmax "
                    "head, two-phase fine-tuning, and a SavedModel that TF Serving loads.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Fresh parents for each command: argparse shares a parent's actions, so one
    # command's set_defaults (train's demo --data) would become every command's.
    data, base = arguments.data_arguments, arguments.base_arguments
    export = arguments.export_arguments
    parser.train_parser = arguments.add_train(subparsers, [data(), base(), export()])
    arguments.add_export(subparsers, [data(), export()])
    arguments.add_lr_find(subparsers, [data(), base()])
    arguments.add_evaluate(subparsers)
    arguments.add_audit(subparsers, [base()])
    arguments.add_compare(subparsers, [data(), base()])
    arguments.add_check_data(subparsers, [data()])
    arguments.add_small_commands(subparsers)
    return parser


def main(argv=None):
    """The entry point of the `tftransfer` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="tftransfer: %(message)s", level=logging.INFO)
    # TensorFlow's logger prints its own records; through ours they would show twice.
    logging.getLogger("tensorflow").propagate = False
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # "Assets written to ..."

    # Each command's function is named after it: `check-data` runs `check_data_command`.
    command = getattr(train if args.command == "train" else commands,
                      args.command.replace("-", "_") + "_command")
    from tftransfer.progress import no_bars

    try:
        if getattr(args, "config", None):
            args = _with_config(parser, argv, args.config)
        # --quiet: one line per epoch, and no bar for the data check either.
        with no_bars() if getattr(args, "quiet", False) else contextlib.nullcontext():
            return command(args)
    except TransferError as error:
        print(f"tftransfer: error: {error}", file=sys.stderr)
        return 2


def _with_config(parser, argv, config):
    """Parses `argv` again over the training options of a run's `config.json`.

    Each replayed value is checked as the command line's would be (its
    choices, its type); outputs and bases come from `argv` or the defaults
    (`runs.NOT_REPLAYED`).
    """
    from tftransfer.training.runs import load_config

    options, whole = load_config(config)
    known = vars(parser.train_parser.parse_known_args([])[0])  # Every dest, public API.
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TransferError(f"--config {config} has options this version does not know: "
                            f"{', '.join(unknown)}")
    # argparse has no public list of a parser's actions; without `_actions`
    # (another argparse), values are replayed unchecked, as the file holds them.
    actions = {a.dest: a for a in getattr(parser.train_parser, "_actions", [])}
    for name, value in options.items():
        if name in actions:
            options[name] = checked_option(actions[name], value, config)
    parser.train_parser.set_defaults(**options)
    args = parser.parse_args(argv)
    args.replayed_digest = whole.get("data_digest")
    written = whole.get("options", {})
    if written.get("base") not in (None, args.base):
        print(f"note: {config} was trained with --base {written['base']}; this run uses "
              f"--base {args.base} (a config never chooses the base: pass it yourself)")
    print(f"options from {config}")
    return args


if __name__ == "__main__":
    sys.exit(main())
