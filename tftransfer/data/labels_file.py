"""The one reader and writer of labels files: the class names in output order.

`labels.txt` sits in an export's `assets/` and beside its `.tflite` files,
`m.labels.txt` beside a `.keras` file that `tftransfer train --save-keras`
wrote. One rule everywhere: UTF-8, one name a line, each line ended by
`"\\n"` (and only by it: a name may hold any character but control ones,
U+2028 included, and a line ending `"\\r\\n"` from another system reads the
same).
"""

from pathlib import Path
from typing import Sequence, Union

from tftransfer import _atomic
from tftransfer.errors import TransferError

#: The labels file of an export and of its TFLite files.
LABELS_FILE = "labels.txt"


def write_labels(path: Union[str, Path], names: Sequence[str]) -> Path:
    """Writes a labels file (staged, then renamed into place).

    Args:
        path: The file.
        names: The class names in output order.

    Returns:
        The `Path` written.

    Raises:
        TransferError: A name holds a control character, which would split
            or garble its line.

    Example:
    >>> import tempfile
    >>> path = write_labels(Path(tempfile.mkdtemp()) / "labels.txt", ["cat", "a\\u2028b"])
    >>> read_labels(path)
    ['cat', 'a\\u2028b']
    """
    names = [str(name) for name in names]
    for name in names:
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise TransferError(f"a class name holds a control character: {name!r}")
    text = "".join(f"{name}\n" for name in names)
    path = Path(path)
    _atomic.replace_file(path, lambda staging: staging.write_text(text, encoding="utf-8"))
    return path


def read_labels(path: Union[str, Path]) -> list:
    """Reads a labels file.

    Args:
        path: The file.

    Returns:
        The class names, in output order.

    Raises:
        TransferError: The file is missing or not UTF-8.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise TransferError(f"{path} not found: the class names of the model") from None
    except UnicodeDecodeError:
        raise TransferError(f"{path} is not UTF-8 text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]
