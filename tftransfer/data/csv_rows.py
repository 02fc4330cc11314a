"""The one reader of CSV files of images: UTF-8 rows, blank ones left out."""

import csv
from pathlib import Path
from typing import Union

from tftransfer.errors import TransferError


def csv_rows(path: Union[str, Path]) -> list:
    """Reads a CSV file's non-blank rows.

    Args:
        path: A UTF-8 CSV file (a byte-order mark is allowed).

    Returns:
        `[(line_number, row)]`, each `row` a list of cells.

    Raises:
        TransferError: The file is missing or not UTF-8 (naming the file and
            the line), rather than a `UnicodeDecodeError` from deep inside.
    """
    path = Path(path)
    if not path.is_file():
        raise TransferError(f"CSV file not found: {path}")
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if row and "".join(row).strip():
                    rows.append((number, row))
    except UnicodeDecodeError as error:
        line = path.read_bytes()[:error.start].count(b"\n") + 1
        raise TransferError(f"{path}:{line}: not UTF-8 text ({error.reason}); save the CSV "
                            "as UTF-8") from None
    except csv.Error as error:
        raise TransferError(f"{path}: not a readable CSV file: {error}") from None
    return rows
