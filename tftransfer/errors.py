"""The one exception type that tftransfer raises for bad input."""


class TransferError(ValueError):
    """Bad input to tftransfer: a missing file, an unknown name, a bad value.

    The CLI prints its message on one line instead of a traceback.
    """
