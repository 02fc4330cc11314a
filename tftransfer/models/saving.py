"""Loading model files, with Keras's safe mode kept where Keras itself does not keep it.

`load_model` is `keras.saving.load_model` for the model files that
tftransfer reads (`evaluate --model`, `export --model`, `--base FILE`), with
two refusals in safe mode, the default: a TF Hub module named in a `.keras`
file (`HubModule.from_config`), and legacy HDF5 model files, for which Keras
ignores `safe_mode` (CVE-2025-9905). Weights files (`.weights.h5`) are not
model files and are not affected.
"""

import zipfile
from pathlib import Path
from typing import Union

import keras

from tftransfer.errors import TransferError
# Imported for their registered classes, which a saved classifier names
# ("tftransfer>Preprocess", ...): Keras finds them only once imported.
from tftransfer.models import features, losses, multi_label  # noqa: F401
from tftransfer.models.hub import UNTRUSTED_MODULE

#: Suffixes of legacy HDF5 model files.
LEGACY_SUFFIXES = (".h5", ".hdf5")


def load_model(path: Union[str, Path], *, safe_mode: bool = True) -> keras.Model:
    """Loads a `.keras` model file; in safe mode, refuses what could run code.

    Args:
        path: A `.keras` file (or, with `safe_mode=False`, a legacy `.h5`).
        safe_mode: Keras's safe mode: no lambdas, no TF Hub modules, no
            legacy HDF5 files. `False` only for files you trust.

    Returns:
        The `keras.Model`.

    Raises:
        TransferError: The file is missing, or holds something that safe
            mode refuses (the message names it and how to trust the file).
    """
    path = Path(path)
    if not path.is_file():
        raise TransferError(f"model file not found: {path}")
    if safe_mode and path.suffix.lower() in LEGACY_SUFFIXES and not path.name.endswith(
            ".weights.h5"):
        raise TransferError(
            f"{path} is a legacy HDF5 model file, which Keras loads without safe mode "
            "(CVE-2025-9905); save it as .keras, or if you trust it, load it with "
            "safe_mode=False (CLI: --trust-model)")
    try:
        return keras.saving.load_model(path, safe_mode=safe_mode)
    except (ValueError, TypeError) as error:
        # Keras re-raises a layer's refusal wrapped in its own message.
        message = str(error)
        if UNTRUSTED_MODULE in message:
            start = message.index(UNTRUSTED_MODULE)
            detail = message[start:].split("\n")[0].rstrip("'\". ")
            raise TransferError(f"{path}: {detail}") from None
        raise TransferError(f"cannot load {path}: {message.splitlines()[0]}") from None
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise TransferError(f"cannot load {path}: not a readable .keras file "
                            f"({type(error).__name__}: {error})") from None
