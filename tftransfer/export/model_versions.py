"""The version folders under a model's base path, as TF Serving reads them.

`export_saved_model` writes `BASE/<version>/`; TF Serving serves the
highest integer version. These find the next and the latest, and check a
target before anything is written, so that `tftransfer train` can refuse an
export it could not write before training rather than after it.
"""

from pathlib import Path
from typing import Optional

from tftransfer.errors import TransferError


def check_export_target(directory, version: Optional[int] = None,
                        overwrite: bool = False) -> Path:
    """Where `export_saved_model` would write, or a `TransferError` saying why it cannot.

    It only lists a folder, so `tftransfer train` checks its export before
    training rather than losing the trained model to it afterwards.

    Args:
        directory, version, overwrite: As in `export_saved_model`.

    Returns:
        The version folder's `Path`.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise TransferError(f"the export folder {directory} is a file; name a folder")
    chosen = version is not None
    target = directory / str(int(version) if chosen else next_version(directory))
    if target.exists() and not overwrite:
        raise TransferError(f"{target} already exists; pass overwrite=True "
                            "(--overwrite) or another version")
    return target


def next_version(directory):
    """Returns one more than the highest integer version in `directory`, or 1."""
    versions = [int(p.name) for p in Path(directory).iterdir()
                if p.is_dir() and p.name.isdigit()] if Path(directory).is_dir() else []
    return max(versions, default=0) + 1


def latest_version(directory):
    """Returns the path of the highest version under a model's base path.

    Args:
        directory: A base path from `export_saved_model`, or a version
            folder itself (returned as is).

    Returns:
        A `Path`.
    """
    directory = Path(directory)
    if (directory / "saved_model.pb").is_file():
        return directory
    version = next_version(directory) - 1
    if version < 1:
        raise TransferError(f"no SavedModel found in {directory}")
    return directory / str(version)
