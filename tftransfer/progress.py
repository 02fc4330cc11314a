"""Progress of the long steps outside `fit`: the data check and feature extraction.

In a terminal, a Keras `Progbar` shows how far a step has got; in a log
file or a pipe nothing is drawn, and the step's own one-line summary (which
the data check and the feature cache log when they finish) is the record.
"""

import contextlib
import sys

import keras

# The innermost `no_bars` wins; bars are allowed outside any.
_allowed = [True]


@contextlib.contextmanager
def no_bars():
    """Within this context, `Progress` draws nothing, even in a terminal."""
    _allowed.append(False)
    try:
        yield
    finally:
        _allowed.pop()


class Progress:
    """A progress bar in a terminal, silence elsewhere.

    Args:
        total: The number of units the step will take, or `None` if unknown.
        unit: What is counted, e.g. `"images"`.
        interactive: Draw the bar (default: when standard output is a
            terminal and bars are allowed, see `no_bars`).
    """

    def __init__(self, total, unit, *, interactive=None):
        if interactive is None:
            interactive = sys.stdout.isatty() and _allowed[-1]
        self._bar = keras.utils.Progbar(total, unit_name=unit) if interactive else None

    def add(self, count):
        """Counts `count` more units done."""
        if self._bar is not None:
            self._bar.add(int(count))
