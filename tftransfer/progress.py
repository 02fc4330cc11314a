"""Progress: of the long steps outside `fit`, and of epochs in a log.

In a terminal, a Keras `Progbar` shows how far a step (the data check,
feature extraction) has got; in a log file or a pipe nothing is drawn, and
the step's own one-line summary (which the data check and the feature cache
log when they finish) is the record. `EpochLine` is the log's line per
epoch of `fit`.
"""

import contextlib
import os
import re
import sys
import threading
import time
from typing import Iterator

import keras

#: Lines that libjpeg prints on standard error itself (its `output_message`,
#: from C, out of Python's reach) when TensorFlow decodes a damaged JPEG, and
#: TensorFlow's own log lines from its JPEG code (jpeg_mem.cc, jpeg_handle.cc):
#: matched from the line's start, so that a log line that names a JPEG
#: ("tftransfer: skipped a.jpg: cannot decode JPEG") is never one of them.
LIBJPEG_LINES = re.compile(
    rb"^(?:[EWI]\d{4} [^\]]*\bjpeg_(?:mem|handle)\.cc:\d+\]|"
    rb"Corrupt JPEG|Premature end of JPEG|Invalid JPEG|Not a JPEG|Improper call to JPEG|"
    rb"Unsupported (?:JPEG|marker)|Bogus |Huffman table|Quantization table|JPEG datastream|"
    rb"Wrong JPEG|Input file read error|Warning: unknown JFIF|Invalid SOS|"
    rb"Inconsistent progression|Empty input file|DCT coefficient|Sampling factors)")

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


def verbosity(verbose):
    """Keras's `verbose` with `"auto"` resolved: 1 (bars) in a terminal, else 2 (a line an epoch).

    Args:
        verbose: `"auto"`, 0, 1 or 2.

    Returns:
        0, 1 or 2.
    """
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return verbose


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


class EpochLine(keras.callbacks.Callback):
    """Prints one line per epoch, for logs where progress bars would be noise.

    Keras' `verbose=2` prints two lines per epoch (`Epoch 3/50`, then the
    metrics); a log file wants one:
    `head epoch 3/50 - 0.4s - accuracy: 0.8125 - loss: 0.5120 - val_...`.

    Args:
        phase: The phase's name, at the start of each line.
        stream: Where the lines go (default: standard output).
    """

    def __init__(self, phase, stream=None):
        super().__init__()
        self.phase = phase
        self.stream = stream
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = " - ".join(f"{name}: {float(value):.4f}"
                             for name, value in sorted((logs or {}).items())
                             if name != "learning_rate")
        epochs = self.params.get("epochs") if self.params else None
        print(f"{self.phase} epoch {epoch + 1}/{epochs} - "
              f"{time.perf_counter() - self._started:.1f}s - {metrics}",
              file=self.stream or sys.stdout, flush=True)


@contextlib.contextmanager
def libjpeg_quiet() -> Iterator[None]:
    """Within this context, libjpeg's own lines on standard error are dropped.

    The data check names every file it skips and why; libjpeg's messages
    for the same files (`Improper call to JPEG library in state 201`) say
    nothing more. Standard error is passed through a pipe, and every other
    line reaches it unchanged. Also a decorator.
    """
    try:
        fd = sys.__stderr__.fileno()
        saved = os.dup(fd)
    except (AttributeError, OSError, ValueError):  # No real stream (some notebooks).
        yield
        return
    sys.stderr.flush()
    read, write = os.pipe()
    os.dup2(write, fd)
    os.close(write)
    forwarder = threading.Thread(target=_forward, args=(read, saved), daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)  # The pipe's last writer gone: the forwarder ends.
        forwarder.join(timeout=10)
        os.close(saved)


def _forward(read, target):
    """Copies lines from `read` to `target`, but libjpeg's."""
    rest = b""
    with os.fdopen(read, "rb", buffering=0) as pipe:
        while chunk := pipe.read(1 << 16):
            *lines, rest = (rest + chunk).split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not LIBJPEG_LINES.search(line))
            if kept:
                os.write(target, kept)
    if rest and not LIBJPEG_LINES.search(rest):
        os.write(target, rest)
