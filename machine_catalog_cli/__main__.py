"""``python -m machine_catalog_cli``: the same CLI as the ``machine-catalog`` console script."""

import sys

from machine_catalog_cli.main import main

if __name__ == "__main__":
    sys.exit(main())
