"""`python -m tftransfer.cli`: the `tftransfer` command."""

import sys

from tftransfer.cli import main

if __name__ == "__main__":
    sys.exit(main())
