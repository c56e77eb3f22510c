"""``python -m machine_catalog``: the same CLI as the ``machine-catalog`` console script."""

import sys

from machine_catalog.cli import main

if __name__ == "__main__":
    sys.exit(main())
